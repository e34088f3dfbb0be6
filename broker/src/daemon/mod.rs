//! The daemon's start-up and serving, in order (the binary only parses its arguments
//! and calls these): take the socket systemd passed, or check that no other broker
//! serves the configured one; prepare the host (sweep, cgroups, open files); run the
//! self-test and refuse to serve without the required layers; bind; report ready;
//! serve until SIGTERM. And `check-config`: the same checks, changing nothing.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use codejail_protocol::{Mode, StatusReport};

use crate::config::Settings;
use crate::run::{pool, Runs};
use crate::server::{self, Service};
use crate::systemd::Activation;

pub mod hardening;
pub mod report;
pub mod selftest;
pub mod startup;

/// Run the self-test: the confinement report it establishes, and whether every
/// required layer holds.
async fn self_test(runs: &Runs) -> (StatusReport, Result<(), String>) {
    let probe = selftest::probe(runs).await;
    let report = report::build(runs.settings(), runs.cgroups().status(), &probe);
    let verdict = match probe.verdict {
        Ok(()) if !report.required_layers_hold() => {
            let missing: Vec<_> = report
                .missing_required()
                .map(|(n, l)| format!("{n} ({})", l.detail))
                .collect();
            Err(format!("required layers missing: {}", missing.join("; ")))
        }
        other => other,
    };
    (report, verdict)
}

/// Install the SIGTERM/SIGINT handlers now (so a signal that arrives during start-up
/// is not fatal) and return the future that resolves when one arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; SIGTERM will kill without grace");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Serve with `settings` until SIGTERM (or SIGINT); `activation` is what systemd passed.
pub async fn serve(mut settings: Settings, mut activation: Activation) -> anyhow::Result<()> {
    // Handlers first: SIGTERM during the self-test must still end in a clean exit 0.
    let signal = shutdown_signal();
    // The socket systemd passed (codejail-broker.socket), if any, is taken first: the
    // socket unit guarantees a single broker, and connecting to its path would only
    // queue a connection on our own socket.
    let inherited = activation.take_listener()?;
    if let Some((_, path)) = &inherited {
        settings.socket_activated = true;
        if let Some(path) = path.as_ref().filter(|p| **p != settings.socket_path) {
            tracing::warn!(configured = %settings.socket_path.display(), passed = %path.display(),
                "systemd passed a socket other than socket.path; serving the one passed");
            settings.socket_path = path.clone();
        }
    } else {
        // Before sweeping anything: a broker already serving this socket owns the runs
        // (and cgroups, and uids) the sweep would remove.
        server::check_no_other_broker(&settings)?;
    }
    let host = startup::prepare_host(&mut settings).context("refusing to start")?;
    let runs = Arc::new(host.runs(settings));
    // The warm pools are built before the self-test, which runs in one of them too.
    if let Err(e) = pool::fill(&runs).await {
        runs.pools().shutdown().await;
        bail!("refusing to start: {e}");
    }
    let (report, verdict) = self_test(&runs).await;
    if let Err(e) = verdict {
        eprint!("{}", report::render(&report));
        runs.pools().shutdown().await;
        bail!("start-up self-test failed, refusing to serve: {e}");
    }
    let banner = report::render(&report);
    let service = Arc::new(Service::new(runs.clone(), report));
    let settings = runs.settings();
    if settings.mode == Mode::Dev {
        eprint!("{banner}");
    } else {
        for line in banner.lines() {
            tracing::info!("{line}");
        }
    }
    let listener = match inherited {
        Some((listener, _)) => {
            listener.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(listener)?
        }
        None => server::bind(settings)?,
    };
    tracing::info!(socket = %settings.socket_path.display(),
        socket_activated = settings.socket_activated, "serving");
    // Ready only now: the self-test passed and the socket accepts (sd_notify(3)).
    let notifier = activation.notifier();
    notifier.ready(&ready_status(&service));
    let _watchdog = activation.watchdog().map(|i| notifier.spawn_watchdog(i));
    let shutdown = async {
        signal.await;
        notifier.stopping();
    };
    let stop_refill = tokio_util::sync::CancellationToken::new();
    let refill = tokio::spawn(pool::refill(runs.clone(), stop_refill.clone()));
    server::run(listener, service.clone(), shutdown).await;
    stop_refill.cancel();
    let _ = refill.await;
    if !settings.socket_activated {
        server::remove_socket(&settings.socket_path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// The `STATUS=` shown by `systemctl status` once serving: the layers not fully held.
fn ready_status(service: &Service) -> String {
    let short: Vec<String> = service
        .report
        .layers
        .iter()
        .filter(|(_, l)| l.state != codejail_protocol::LayerState::Full)
        .map(|(n, l)| format!("{n} {}", l.state.as_str()))
        .collect();
    format!(
        "serving on {}; confinement: {}",
        service.settings().socket_path.display(),
        if short.is_empty() {
            "every layer full".to_string()
        } else {
            format!("every required layer full; {}", short.join(", "))
        }
    )
}

/// `codejail-broker check-config FILE`: 0 valid and every required layer holds here, 1
/// a required layer does not, 2 invalid.
pub fn check_config(file: &Path) -> ExitCode {
    let mut settings = match Settings::from_file(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("codejail-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codejail-broker: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Look only: check-config must not sweep or move anything of a serving broker.
    let host = match startup::inspect_host(&mut settings) {
        Ok(h) => h,
        Err(e) => {
            println!("a required layer does not hold here: {e}");
            return ExitCode::from(1);
        }
    };
    let runs = host.runs(settings);
    // The warm pools too: a pool whose interpreter lacks the start-up hook fails here.
    let (report, verdict) = rt.block_on(async {
        let checked = match pool::fill(&runs).await {
            Ok(()) => self_test(&runs).await,
            Err(e) => {
                let report = report::build(
                    runs.settings(),
                    runs.cgroups().status(),
                    &selftest::Probe::not_run(),
                );
                (report, Err(e))
            }
        };
        runs.pools().shutdown().await;
        checked
    });
    print!("{}", report::render(&report));
    match verdict {
        Ok(()) if report.required_layers_hold() => {
            println!(
                "config {} is valid and every required layer holds here",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::from(1),
        Err(e) => {
            println!("a required layer does not hold here: {e}");
            ExitCode::from(1)
        }
    }
}
