//! A spinner on stderr for work that is usually quick but sometimes is not, such as
//! preparing a model on OpenCL: a cached program loads in milliseconds, a cold build
//! takes seconds. It appears only once the work has taken `delay`, so quick runs
//! print nothing, and indicatif draws it only when stderr is a terminal.

use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

/// How long work runs before the spinner appears.
pub const SPINNER_DELAY: Duration = Duration::from_secs(1);

/// Runs `work`, showing `message` with a spinner if it takes longer than `delay`.
pub fn with_spinner<R>(delay: Duration, message: &str, work: impl FnOnce() -> R) -> R {
    let (done, wait) = channel::<()>();
    let message = message.to_string();
    let spinner = std::thread::spawn(move || {
        // A dropped sender (the work finished) ends the wait early.
        if wait.recv_timeout(delay) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        let _ = wait.recv();
        bar.finish_and_clear();
    });
    let result = work();
    drop(done);
    let _ = spinner.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn quick_work_returns_at_once_and_slow_work_returns_its_result() {
        let t = Instant::now();
        assert_eq!(with_spinner(Duration::from_secs(30), "quick", || 7), 7);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the spinner held up quick work"
        );
        let slow = with_spinner(Duration::from_millis(10), "slow", || {
            std::thread::sleep(Duration::from_millis(100));
            "done"
        });
        assert_eq!(slow, "done");
    }
}
