//! A timeout around blocking collectives: a rank that hangs without dying (a stuck
//! driver, a stopped process) would otherwise leave every other rank waiting in its
//! next all-reduce for ever, since `mpirun` only notices processes that exit.
//!
//! The collective marks when it started waiting ([`Watchdog::guard`]); a thread of the
//! watchdog's own wakes a few times per timeout and calls `on_expire` once a wait has
//! lasted longer than the timeout. For data-parallel training `on_expire` prints which
//! rank waited for how long and aborts the process, which `mpirun` reports (naming the
//! rank) and answers by ending the job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Watches the waits of one thread's collectives.
pub struct Watchdog {
    /// Milliseconds since `start` at which the current wait began, plus one; 0 while
    /// no collective is waiting.
    entered: Arc<AtomicU64>,
    start: Instant,
}

/// Marks a collective in progress until dropped.
pub struct Guard<'a>(&'a Watchdog);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.entered.store(0, Ordering::SeqCst);
    }
}

impl Watchdog {
    /// Starts the watching thread; it ends when the watchdog is dropped.
    pub fn start(timeout: Duration, on_expire: impl Fn(Duration) + Send + 'static) -> Watchdog {
        let entered = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let weak: Weak<AtomicU64> = Arc::downgrade(&entered);
        let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::spawn(move || loop {
            std::thread::sleep(tick);
            let Some(e) = weak.upgrade() else { return };
            let at = e.load(Ordering::SeqCst);
            if at == 0 {
                continue;
            }
            let waited = start
                .elapsed()
                .saturating_sub(Duration::from_millis(at - 1));
            if waited > timeout {
                on_expire(waited);
                return;
            }
        });
        Watchdog { entered, start }
    }

    /// Marks a wait as begun, until the guard is dropped.
    pub fn guard(&self) -> Guard<'_> {
        let ms = self.start.elapsed().as_millis() as u64;
        self.entered.store(ms + 1, Ordering::SeqCst);
        Guard(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_wait_past_the_timeout_fires_and_short_ones_do_not() {
        let (tx, rx) = channel();
        let w = Watchdog::start(Duration::from_millis(500), move |d| {
            tx.send(d).unwrap();
        });
        for _ in 0..5 {
            let _g = w.guard();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Idle time between collectives never counts.
        std::thread::sleep(Duration::from_millis(1000));
        assert!(rx.try_recv().is_err(), "short waits and idle time fired");
        let g = w.guard();
        let waited = rx.recv_timeout(Duration::from_secs(5)).expect("fired");
        assert!(waited > Duration::from_millis(500), "{waited:?}");
        drop(g);
    }
}
