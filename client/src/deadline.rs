//! Deadlines: every wait of a call is bounded by one, and a wait that outlives it fails
//! with a timeout naming which bound it was (`connect`, `start`, `queue`, `total`).

use std::future::Future;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use crate::ClientError;

/// A point in time after which a wait fails with [`ClientError::Timeout`]`(label)`.
/// `at == None` means no deadline (a duration too large to add to now).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Option<Instant>,
    label: &'static str,
}

impl Deadline {
    /// `timeout` from now.
    pub(crate) fn after(timeout: Duration, label: &'static str) -> Self {
        Deadline {
            at: Instant::now().checked_add(timeout),
            label,
        }
    }

    /// No deadline.
    pub(crate) fn never() -> Self {
        Deadline {
            at: None,
            label: "total",
        }
    }

    /// Whichever comes first (`self` on a tie, so its label wins).
    pub(crate) fn earliest(self, other: Deadline) -> Deadline {
        match (self.at, other.at) {
            (Some(a), Some(b)) if b < a => other,
            (Some(_), _) => self,
            (None, _) => other,
        }
    }

    /// Run `fut` until this deadline.
    pub(crate) async fn run<F: Future>(self, fut: F) -> Result<F::Output, ClientError> {
        match self.at {
            Some(at) => timeout_at(at, fut)
                .await
                .map_err(|_| ClientError::Timeout(self.label)),
            None => Ok(fut.await),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_timeout_means_no_deadline() {
        let d = Deadline::after(Duration::MAX, "total");
        assert!(d.at.is_none());
        assert_eq!(d.run(async { 7 }).await.expect("no timeout"), 7);
        let soon = Deadline::after(Duration::from_millis(1), "queue");
        assert_eq!(soon.earliest(d).label, "queue");
        assert_eq!(d.earliest(soon).label, "queue");
    }
}
