//! The host memory a piece of work takes at its peak, measured as the growth of the
//! process's peak resident set size over it (what `tools/torch_twin.py --training`
//! measures for PyTorch, so the two compare).
//!
//! Linux keeps one high-water mark per process (`VmHWM` in /proc/self/status, the
//! same number as `getrusage`'s `ru_maxrss`). Writing `5` to /proc/self/clear_refs
//! resets it to the current RSS, so the peak of the work alone is measured even when
//! compiling or preparing peaked higher before it; where that is refused, the growth
//! of the mark is the measure (an under-estimate when an earlier peak was higher).

/// A field of /proc/self/status in bytes (`VmRSS`, `VmHWM`); `None` off Linux.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Resets the peak RSS to the current RSS; `false` where the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// How a peak was measured, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeakMethod {
    /// Peak RSS reset before the work, minus the RSS then.
    ResetHighWaterMark,
    /// Growth of the unreset peak RSS (an under-estimate after a higher earlier peak).
    HighWaterMarkGrowth,
}

/// Runs `work` and returns its result and the bytes the process's peak RSS rose above
/// its RSS before (`None` where /proc/self/status cannot be read).
pub fn peak_growth<R>(work: impl FnOnce() -> R) -> (R, Option<(u64, PeakMethod)>) {
    let reset = reset_peak();
    let before = if reset {
        status_bytes("VmRSS:")
    } else {
        status_bytes("VmHWM:")
    };
    let out = work();
    let after = status_bytes("VmHWM:");
    let method = if reset {
        PeakMethod::ResetHighWaterMark
    } else {
        PeakMethod::HighWaterMarkGrowth
    };
    let growth = before
        .zip(after)
        .map(|(b, a)| (a.saturating_sub(b), method));
    (out, growth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_allocation_shows_as_growth() {
        if status_bytes("VmRSS:").is_none() {
            return; // not Linux: nothing to measure
        }
        const MB: usize = 1 << 20;
        let (sum, growth) = peak_growth(|| {
            // Touch every page so it is resident, not only reserved.
            let v = vec![1u8; 64 * MB];
            v.iter().step_by(4096).map(|&b| b as usize).sum::<usize>()
        });
        assert_eq!(sum, 64 * MB / 4096);
        let (bytes, _) = growth.expect("measured");
        assert!(bytes >= 60 * MB as u64, "grew {bytes} bytes for 64 MiB");
        // Work that allocates nothing of note grows the peak by far less.
        let sleep = || std::thread::sleep(std::time::Duration::from_millis(1));
        let (small, _) = peak_growth(sleep).1.expect("measured");
        assert!(
            small < 16 * MB as u64,
            "a 1 ms sleep grew the peak by {small} bytes"
        );
    }
}
