//! Blocking wrappers for callers without an async runtime (a WSGI worker, a Python
//! extension). Each call builds a small current-thread tokio runtime, runs the async
//! call on it, and drops it.
//!
//! Calling these from inside a tokio runtime is not supported: it would block one of
//! that runtime's threads for the whole run. Use the async API there. (So that such a
//! mistake degrades instead of panicking, the call then runs on a helper thread.)

use std::future::Future;

use codejail_protocol::StatusReport;

use crate::{ClientConfig, ClientError, JailRequest, JailResult};

/// [`crate::jail_code`], blocking the calling thread.
pub fn jail_code(cfg: &ClientConfig, req: &JailRequest) -> Result<JailResult, ClientError> {
    block_on(crate::jail_code(cfg, req))
}

/// [`crate::status`], blocking the calling thread.
pub fn status(cfg: &ClientConfig) -> Result<StatusReport, ClientError> {
    block_on(crate::status(cfg))
}

/// Run `fut` to completion on a fresh current-thread runtime.
fn block_on<T: Send>(
    fut: impl Future<Output = Result<T, ClientError>> + Send,
) -> Result<T, ClientError> {
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?
            .block_on(fut)
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    // Inside a runtime `block_on` would panic ("Cannot start a runtime from within a
    // runtime"); a helper thread has no runtime of its own.
    std::thread::scope(|s| match s.spawn(run).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[test]
    fn works_without_and_inside_a_runtime() {
        let mut cfg = ClientConfig::new("/nonexistent/codejail-test.sock");
        cfg.connect_timeout = std::time::Duration::from_secs(1);
        let err = status(&cfg).expect_err("no broker");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt.block_on(async { status(&cfg) }).expect_err("no broker");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }
}
