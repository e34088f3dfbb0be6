//! The pools' state machine, transition by transition, with its invariants checked
//! after each (`check`, also run by every transition in these debug builds).

use super::*;

/// A stand-in for a warm jail: a number, and whether it is alive.
#[derive(Debug, PartialEq, Eq)]
struct Jail(u32, bool);

fn spec(size: u32, max_age_secs: u64) -> PoolSpec {
    PoolSpec {
        size,
        preimport: vec!["numpy".into()],
        max_age: Duration::from_secs(max_age_secs),
        fork_server: false,
        zygote: Default::default(),
    }
}

fn pools(specs: &[(&str, u32)], builders: u32) -> PoolsState<Jail> {
    PoolsState::new(
        specs
            .iter()
            .map(|(command, size)| (command.to_string(), spec(*size, 600))),
        builders,
        4096,
    )
}

const IDLE: Footprint = Footprint {
    rss_kib: 25_000,
    vm_bytes: 100 << 20,
    memory_bytes: Some(10 << 20),
};

fn limits(pairs: &[(LimitName, u64)]) -> Limits {
    let mut l = Limits::default();
    for (name, value) in pairs {
        l.set(*name, *value);
    }
    l
}

fn alive(j: &mut Jail) -> bool {
    j.1
}

/// Claim and build one jail of `command`, ready at `now`.
fn fill_one(state: &mut PoolsState<Jail>, command: &str, id: u32, now: Instant) {
    let claim = state.claim_build(now).expect("a build to claim");
    assert_eq!(claim.command, command);
    assert!(state.built(command, Jail(id, true), IDLE, now).is_none());
}

#[test]
fn a_build_is_claimed_for_the_pool_that_lacks_the_most_up_to_its_size() {
    let now = Instant::now();
    let mut state = pools(&[("python", 1), ("numpy", 2)], 8);
    let first = state.claim_build(now).expect("claim");
    assert_eq!(first.command, "numpy");
    assert_eq!(first.spec, spec(2, 600));
    // numpy now lacks 1, python 1: either may come next; then the other.
    let second = state.claim_build(now).expect("claim").command;
    let third = state.claim_build(now).expect("claim").command;
    let mut rest = [second, third];
    rest.sort();
    assert_eq!(rest, ["numpy".to_string(), "python".to_string()]);
    assert_eq!(state.claim_build(now), None, "every place is being built");
    state.check().expect("invariants");
}

#[test]
fn builds_at_once_are_capped_by_the_builders() {
    let now = Instant::now();
    let mut state = pools(&[("python", 3)], 1);
    assert!(state.claim_build(now).is_some());
    assert_eq!(state.claim_build(now), None, "one builder, busy");
    assert!(state.built("python", Jail(1, true), IDLE, now).is_none());
    assert!(
        state.claim_build(now).is_some(),
        "the builder is free again"
    );
}

#[test]
fn a_built_jail_is_ready_and_its_footprint_shown() {
    let now = Instant::now();
    let mut state = pools(&[("python", 2)], 2);
    fill_one(&mut state, "python", 1, now);
    let status = &state.status()["python"];
    assert_eq!((status.size, status.ready), (2, 1));
    assert_eq!(status.idle_rss_kib, IDLE.rss_kib);
    assert_eq!(status.idle_memory_bytes, IDLE.memory_bytes);
    assert_eq!(status.preimport, vec!["numpy".to_string()]);
}

#[test]
fn a_failed_build_makes_its_pool_wait_twice_as_long_per_failure_in_a_row() {
    let now = Instant::now();
    let mut state = pools(&[("python", 1)], 1);
    state.claim_build(now).expect("claim");
    let first = state.failed("python", now);
    assert_eq!(first, RETRY_FIRST * 2);
    assert_eq!(state.claim_build(now), None, "waiting out the failure");
    assert_eq!(
        state.claim_build(now + first - Duration::from_millis(1)),
        None
    );
    let later = now + first;
    state.claim_build(later).expect("the wait is over");
    let second = state.failed("python", later);
    assert_eq!(second, first * 2);
    // The waits stop growing at RETRY_MAX.
    let mut t = later + second;
    for _ in 0..10 {
        state.claim_build(t).expect("claim");
        let wait = state.failed("python", t);
        assert!(wait <= RETRY_MAX);
        t += wait;
    }
    assert_eq!(state.failed("unknown", t), Duration::ZERO);
    // A success forgets the failures: the next failure waits the first wait again.
    state.claim_build(t).expect("claim");
    assert!(state.built("python", Jail(1, true), IDLE, t).is_none());
    let pool = &state.pools["python"];
    assert_eq!((pool.failures, pool.retry_at), (0, None));
    assert!(state
        .take("python", &limits(&[]), true, t, alive)
        .jail
        .is_some());
    assert!(state.released("python"));
    state.claim_build(t).expect("claim");
    assert_eq!(state.failed("python", t), first);
    state.check().expect("invariants");
}

#[test]
fn a_take_hands_out_a_ready_jail_and_counts_it_in_use_until_released() {
    let now = Instant::now();
    let mut state = pools(&[("python", 1)], 1);
    fill_one(&mut state, "python", 7, now);
    let taken = state.take("python", &limits(&[]), true, now, alive);
    assert_eq!(taken.jail, Some(Jail(7, true)));
    assert!(taken.stale.is_empty());
    assert_eq!(state.status()["python"].hits, 1);
    // In use, its place is not free: no build until the run is cleaned up.
    assert_eq!(state.claim_build(now), None);
    assert!(state.released("python"));
    assert!(state.claim_build(now).is_some(), "the place is free again");
    assert!(!state.released("python"), "nothing was in use");
    assert!(!state.released("unknown"));
}

#[test]
fn a_take_misses_without_code_without_a_ready_jail_or_for_an_unpooled_command() {
    let now = Instant::now();
    let mut state = pools(&[("python", 1)], 1);
    let none = state.take("python", &limits(&[]), true, now, alive);
    assert!(none.jail.is_none());
    fill_one(&mut state, "python", 1, now);
    // A run without code (argv only) cannot use a warm jail, which runs jailed_code.
    let no_code = state.take("python", &limits(&[]), false, now, alive);
    assert!(no_code.jail.is_none());
    assert_eq!(state.status()["python"].ready, 1, "the jail stays ready");
    let unpooled = state.take("ruby", &limits(&[]), true, now, alive);
    assert!(unpooled.jail.is_none());
    let status = &state.status()["python"];
    assert_eq!((status.hits, status.misses), (0, 2));
    assert!(!state.status().contains_key("ruby"));
}

#[test]
fn a_request_that_does_not_fit_misses_and_leaves_the_jail_ready() {
    let now = Instant::now();
    let mut state = pools(&[("python", 1)], 1);
    fill_one(&mut state, "python", 1, now);
    let tight = limits(&[(LimitName::Vmem, (100 << 20) + VMEM_MARGIN - 1)]);
    assert!(state
        .take("python", &tight, true, now, alive)
        .jail
        .is_none());
    assert_eq!(state.status()["python"].ready, 1);
    let roomy = limits(&[(LimitName::Vmem, (100 << 20) + VMEM_MARGIN)]);
    assert!(state
        .take("python", &roomy, true, now, alive)
        .jail
        .is_some());
}

#[test]
fn dead_and_aged_jails_are_taken_out_on_the_way_to_a_live_one() {
    let now = Instant::now();
    let mut state = PoolsState::new([("python".to_string(), spec(3, 10))], 3, 4096);
    for (id, is_alive, age) in [(1, true, 11), (2, false, 0), (3, true, 0)] {
        let built = now - Duration::from_secs(age);
        state.claim_build(built).expect("claim");
        assert!(state
            .built("python", Jail(id, is_alive), IDLE, built)
            .is_none());
    }
    let taken = state.take("python", &limits(&[]), true, now, alive);
    assert_eq!(taken.jail, Some(Jail(3, true)));
    assert_eq!(taken.stale, vec![Jail(1, true), Jail(2, false)]);
    // The stale ones no longer count: two places are free to rebuild.
    assert!(state.claim_build(now).is_some());
    assert!(state.claim_build(now).is_some());
    assert_eq!(state.claim_build(now), None);
}

#[test]
fn expire_takes_out_only_the_jails_past_their_pools_maximum_age() {
    let now = Instant::now();
    let mut state = PoolsState::new(
        [
            ("old".to_string(), spec(2, 10)),
            ("young".to_string(), spec(1, 600)),
        ],
        4,
        4096,
    );
    let early = now - Duration::from_secs(20);
    for command in ["old", "young"] {
        state.claim_build(early).expect("claim");
        state.built(command, Jail(1, true), IDLE, early);
    }
    state.claim_build(now).expect("claim");
    state.built("old", Jail(2, true), IDLE, now);
    let expired = state.expire(now);
    assert_eq!(expired, vec![("old".to_string(), Jail(1, true))]);
    assert_eq!(state.status()["old"].ready, 1);
    assert_eq!(state.status()["young"].ready, 1);
}

#[test]
fn shutdown_takes_every_ready_jail_and_refuses_builds_from_then_on() {
    let now = Instant::now();
    let mut state = pools(&[("python", 3)], 2);
    fill_one(&mut state, "python", 1, now);
    fill_one(&mut state, "python", 2, now);
    state.claim_build(now).expect("a build in flight");
    let all = state.shutdown();
    assert_eq!(all, vec![Jail(1, true), Jail(2, true)]);
    assert_eq!(state.claim_build(now), None);
    // The build in flight ends after the shutdown: its jail comes back to be retired.
    assert_eq!(
        state.built("python", Jail(3, true), IDLE, now),
        Some(Jail(3, true))
    );
    assert_eq!(state.status()["python"].ready, 0);
    state.check().expect("invariants");
}

#[test]
fn a_jail_built_for_an_unknown_pool_comes_back() {
    let mut state = pools(&[("python", 1)], 1);
    assert_eq!(
        state.built("ruby", Jail(1, true), IDLE, Instant::now()),
        Some(Jail(1, true))
    );
}

#[test]
fn reset_counts_forgets_hits_and_misses() {
    let now = Instant::now();
    let mut state = pools(&[("python", 1)], 1);
    fill_one(&mut state, "python", 1, now);
    state.take("python", &limits(&[]), true, now, alive);
    state.take("python", &limits(&[]), true, now, alive);
    state.reset_counts();
    let status = &state.status()["python"];
    assert_eq!((status.hits, status.misses), (0, 0));
}

#[test]
fn check_finds_each_broken_invariant() {
    let now = Instant::now();
    let mut over = pools(&[("python", 1)], 4);
    over.pools.get_mut("python").expect("pool").in_use = 2;
    assert!(over.check().is_err(), "over its size");
    let mut builders = pools(&[("a", 4), ("b", 4)], 1);
    builders.pools.get_mut("a").expect("pool").building = 1;
    builders.pools.get_mut("b").expect("pool").building = 1;
    assert!(builders.check().is_err(), "over the builders");
    let mut retry = pools(&[("python", 1)], 1);
    retry.pools.get_mut("python").expect("pool").retry_at = Some(now);
    assert!(retry.check().is_err(), "a wait without a failure");
    let mut shut = pools(&[("python", 1)], 1);
    shut.shut_down = true;
    shut.pools
        .get_mut("python")
        .expect("pool")
        .ready
        .push_back(Ready {
            jail: Jail(1, true),
            built: now,
            footprint: IDLE,
        });
    assert!(shut.check().is_err(), "ready after shutdown");
}

#[test]
fn the_invariants_hold_through_any_sequence_of_transitions() {
    // A fixed pseudo-random walk over every transition, checking after each step.
    let start = Instant::now();
    let mut state = PoolsState::new(
        [
            ("a".to_string(), spec(3, 5)),
            ("b".to_string(), spec(2, 50)),
        ],
        2,
        4096,
    );
    let mut building: Vec<String> = Vec::new();
    let mut in_use: Vec<String> = Vec::new();
    let mut seed = 0x2545_f491_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..5_000u32 {
        let now = start + Duration::from_millis(u64::from(step) * 10);
        match next(7) {
            0 => {
                if let Some(claim) = state.claim_build(now) {
                    building.push(claim.command);
                }
            }
            1 if !building.is_empty() => {
                let command = building.remove(next(building.len() as u64) as usize);
                let jail = Jail(step, next(5) != 0);
                assert!(state.built(&command, jail, IDLE, now).is_none());
            }
            2 if !building.is_empty() => {
                let command = building.remove(next(building.len() as u64) as usize);
                state.failed(&command, now);
            }
            3 => {
                let command = if next(2) == 0 { "a" } else { "b" };
                if state
                    .take(command, &limits(&[]), true, now, alive)
                    .jail
                    .is_some()
                {
                    in_use.push(command.to_string());
                }
            }
            4 if !in_use.is_empty() => {
                let command = in_use.remove(next(in_use.len() as u64) as usize);
                assert!(state.released(&command));
            }
            5 => {
                state.expire(now);
            }
            _ => {}
        }
        state.check().expect("invariants after every transition");
        for (command, pool) in &state.pools {
            let held_in_use = in_use.iter().filter(|c| *c == command).count() as u32;
            let held_building = building.iter().filter(|c| *c == command).count() as u32;
            assert_eq!(pool.in_use, held_in_use, "{command} in use");
            assert_eq!(pool.building, held_building, "{command} building");
        }
    }
    state.shutdown();
    state.check().expect("invariants after shutdown");
}

#[test]
fn a_request_fits_a_warm_jail_only_with_room_above_its_footprint() {
    let nofile = 4096;
    assert!(fits(&IDLE, &limits(&[]), nofile));
    assert!(fits(
        &IDLE,
        &limits(&[(LimitName::Vmem, (100 << 20) + VMEM_MARGIN)]),
        nofile
    ));
    assert!(!fits(
        &IDLE,
        &limits(&[(LimitName::Vmem, (100 << 20) + VMEM_MARGIN - 1)]),
        nofile
    ));
    assert!(fits(
        &IDLE,
        &limits(&[(LimitName::Memory, (10 << 20) + MEMORY_MARGIN)]),
        nofile
    ));
    assert!(!fits(
        &IDLE,
        &limits(&[(LimitName::Memory, 20 << 20)]),
        nofile
    ));
    assert!(!fits(
        &IDLE,
        &limits(&[(LimitName::Nofile, nofile + 1)]),
        nofile
    ));
    // Unmeasured: no VMEM limit fits; no memory cgroup: MEMORY is not enforced.
    let unknown = Footprint {
        vm_bytes: 0,
        memory_bytes: None,
        ..IDLE
    };
    assert!(!fits(
        &unknown,
        &limits(&[(LimitName::Vmem, 1 << 40)]),
        nofile
    ));
    assert!(fits(
        &unknown,
        &limits(&[(LimitName::Memory, 1 << 20)]),
        nofile
    ));
}

/// A fork server's pool of one, its jail built and taken: the next run misses.
fn forked_pool_missing(now: Instant) -> PoolsState<Jail> {
    let mut forked = spec(1, 600);
    forked.fork_server = true;
    let mut state = PoolsState::new([("python".to_string(), forked)], 1, 4096);
    fill_one(&mut state, "python", 1, now);
    assert!(state
        .take("python", &limits(&[]), true, now, alive)
        .jail
        .is_some());
    assert!(state
        .take("python", &limits(&[]), true, now, alive)
        .jail
        .is_none());
    state
}

#[test]
fn a_miss_of_a_fork_server_pool_is_forked_now_and_counted_so() {
    let now = Instant::now();
    let mut state = forked_pool_missing(now);
    let spec = state.fork_now("python", &limits(&[]), true);
    assert!(spec.is_some_and(|s| s.fork_server));
    let status = &state.status()["python"];
    assert_eq!((status.hits, status.misses, status.forked_now), (1, 0, 1));
    assert!(
        status.fork_server.is_some(),
        "a fork server's pool shows one"
    );
    // A jail forked now is not the pool's: the pool's own count is unchanged.
    assert_eq!(
        state.claim_build(now),
        None,
        "the pool's one place is in use"
    );
    state.check().expect("invariants");
    // When the fork fails, the run goes cold: a miss after all.
    state.fork_failed("python");
    let status = &state.status()["python"];
    assert_eq!((status.misses, status.forked_now), (1, 0));
}

#[test]
fn no_fork_now_without_a_fork_server_a_build_code_a_fit_or_while_failing() {
    let now = Instant::now();
    // A pool without a fork server.
    let mut state = pools(&[("python", 1)], 1);
    fill_one(&mut state, "python", 1, now);
    assert!(state.fork_now("python", &limits(&[]), true).is_none());
    assert!(state.status()["python"].fork_server.is_none());
    // A fork server's pool, but no code, or a VMEM below the footprint's margin.
    let mut state = forked_pool_missing(now);
    assert!(state.fork_now("python", &limits(&[]), false).is_none());
    let tight = limits(&[(LimitName::Vmem, IDLE.vm_bytes)]);
    assert!(state.fork_now("python", &tight, true).is_none());
    assert!(state.fork_now("ruby", &limits(&[]), true).is_none());
    // Before any build (no footprint to fit), and while builds fail.
    let mut forked = spec(1, 600);
    forked.fork_server = true;
    let mut fresh: PoolsState<Jail> = PoolsState::new([("python".to_string(), forked)], 1, 4096);
    assert!(fresh.fork_now("python", &limits(&[]), true).is_none());
    fill_one(&mut fresh, "python", 1, now);
    assert!(fresh.claim_build(now).is_none());
    let _ = fresh.take("python", &limits(&[]), true, now, alive);
    fresh.released("python");
    assert!(fresh.claim_build(now).is_some());
    fresh.failed("python", now);
    assert!(fresh.fork_now("python", &limits(&[]), true).is_none());
    assert_eq!(fresh.status()["python"].forked_now, 0);
}
