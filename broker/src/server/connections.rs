//! The connection cap (issue: one allowed peer must not lock every other out): every
//! accepted connection takes a place in [`Connections`] before its task starts; at the
//! cap the connection idle the longest (between requests, or not yet past its Hello)
//! is closed to make room, and only when every connection is inside a request is the
//! new one refused, with the reason. A per-uid cap alone could not help: every LMS
//! worker and the HTTP front share one uid.
//!
//! An idle connection is closed silently (EOF), as an idle timeout closes it: its
//! client has no request in flight, so it loses nothing and reconnects (both clients
//! do so transparently for a kept connection that turns out closed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The registry of open connections.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    open: BTreeMap<u64, Entry>,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    /// Since when the connection has been idle; `None` while it serves a request.
    idle_since: Option<Instant>,
    /// Cancelled to close it.
    close: CancellationToken,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the broker is at its cap of {max} connections, all of them inside a request; try again shortly")]
pub struct Full {
    /// The cap.
    pub max: usize,
}

impl Connections {
    /// A registry admitting at most `max` connections at once.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            inner: Mutex::new(Registry::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry holds no invariant a panicking holder could break halfway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a new connection (idle until it starts a request), closing the one idle
    /// the longest when at the cap.
    pub fn admit(self: &Arc<Self>) -> Result<Place, Full> {
        let mut reg = self.lock();
        if reg.open.len() >= self.max {
            let oldest = reg
                .open
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id);
            let Some(id) = oldest else {
                return Err(Full { max: self.max });
            };
            if let Some(entry) = reg.open.remove(&id) {
                entry.close.cancel();
                reg.evicted += 1;
                tracing::info!(
                    cap = self.max,
                    "connection cap reached: closing the connection idle the longest"
                );
            }
        }
        let id = reg.next_id;
        reg.next_id += 1;
        let close = CancellationToken::new();
        reg.open.insert(
            id,
            Entry {
                idle_since: Some(Instant::now()),
                close: close.clone(),
            },
        );
        Ok(Place {
            id,
            close,
            registry: self.clone(),
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Connections closed so far to make room for new ones.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(e) = self.lock().open.get_mut(&id) {
            e.idle_since = idle.then(Instant::now);
        }
    }
}

/// A connection's place in the registry, given back when dropped.
#[derive(Debug)]
pub struct Place {
    id: u64,
    close: CancellationToken,
    registry: Arc<Connections>,
}

impl Place {
    /// The connection is now serving a request: it is not closed to make room.
    pub fn busy(&self) {
        self.registry.set_idle(self.id, false);
    }

    /// The connection is waiting for its next request.
    pub fn idle(&self) {
        self.registry.set_idle(self.id, true);
    }

    /// Resolves when the registry closed this connection to make room.
    pub async fn evicted(&self) {
        self.close.cancelled().await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_goes_and_busy_ones_stay() {
        let c = Connections::new(3);
        let a = c.admit().expect("a");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = c.admit().expect("b");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let d = c.admit().expect("d");
        // a is the oldest idle one, but busy: b goes instead.
        a.busy();
        let e = c.admit().expect("e");
        assert!(
            b.close.is_cancelled(),
            "the longest idle connection is closed"
        );
        assert!(!a.close.is_cancelled() && !d.close.is_cancelled());
        assert_eq!(c.open(), 3);
        assert_eq!(c.evicted(), 1);
        // Everything busy: refused.
        d.busy();
        e.busy();
        assert_eq!(c.admit().expect_err("full"), Full { max: 3 });
        // A connection that ends frees its place.
        drop(e);
        assert_eq!(c.open(), 2);
        let _f = c.admit().expect("room again");
        drop(b);
        assert_eq!(c.open(), 3, "an evicted place was already given back");
    }
}
