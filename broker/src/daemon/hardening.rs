//! What the broker does to itself before anything else: it stops being dumpable (so
//! that no process of its uid, dev-mode runs among them, can trace it or read its
//! memory), and big allocations become mappings of their own, given back to the
//! kernel when freed (so that the request budget's count is what its RSS holds; see
//! `run/budget.rs`).

use crate::sys;

/// Make the broker not dumpable (`PR_SET_DUMPABLE 0`): same-uid processes, runs in
/// dev mode among them, can then neither ptrace it nor read its `/proc/<pid>/environ`
/// or memory. Called first thing at start-up.
pub fn protect_broker() -> std::io::Result<()> {
    sys::make_undumpable()?;
    if sys::is_dumpable()? {
        return Err(std::io::Error::other("PR_SET_DUMPABLE 0 did not hold"));
    }
    Ok(())
}

/// Make the memory of big allocations (request frames and payloads among them) go
/// back to the kernel when they are freed, so that what the budget counts is what the
/// broker's RSS holds; called once at start-up (see `sys::map_big_allocations`).
pub fn map_big_allocations() -> std::io::Result<()> {
    sys::map_big_allocations()
}
