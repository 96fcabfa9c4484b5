//! The server's clock. Production uses the system clock; tests drive a [`ManualClock`] so a
//! whole agenda runs in virtual time without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where "now" comes from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock moved by hand (tests, benchmarks).
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// A manual clock starting at `start`, and its handle.
    pub fn manual(start: Millis) -> (Clock, Arc<ManualClock>) {
        let (tx, _) = watch::channel(start);
        let m = Arc::new(ManualClock {
            now: AtomicI64::new(start),
            tx,
        });
        (Clock::Manual(m.clone()), m)
    }

    /// The current time.
    pub fn now(&self) -> Millis {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or(0),
            Clock::Manual(m) => m.now.load(Ordering::SeqCst),
        }
    }

    /// For a manual clock, a receiver that wakes when it moves.
    pub fn subscribe(&self) -> Option<watch::Receiver<Millis>> {
        match self {
            Clock::System => None,
            Clock::Manual(m) => Some(m.tx.subscribe()),
        }
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    tx: watch::Sender<Millis>,
}

impl ManualClock {
    /// Moves the clock forward by `ms` and wakes every meeting task.
    pub fn advance(&self, ms: i64) {
        let now = self.now.fetch_add(ms, Ordering::SeqCst) + ms;
        self.tx.send_replace(now);
    }

    /// The current time.
    pub fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}
