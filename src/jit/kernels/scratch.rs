//! Per-thread scratch memory that outlives a kernel call.
//!
//! A Winograd chunk needs a few hundred KiB of transformed inputs and products.
//! Allocating them in every call made glibc hand out fresh pages (its mmap threshold
//! depends on the process's history), and the page faults and zeroing took a quarter
//! of a 16-channel conv. A rayon worker keeps its buffer from call to call instead.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats per 64-byte cache line: the slice starts on a line, so a kernel's
/// vector stores at multiples of 16 floats never split a line.
const LINE: usize = 16;

/// Runs `f` on `len` floats of this thread's scratch, starting on a 64-byte line.
/// The contents are whatever the last user left (finite or not): callers write
/// before they read. A nested call (`f` itself asking for scratch) gets a fresh
/// buffer.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len + LINE {
        buf.resize(len + LINE, 0.0);
    }
    let skip = buf.as_ptr().align_offset(4 * LINE).min(LINE);
    let out = f(&mut buf[skip..skip + len]);
    SCRATCH.with(|s| {
        let mut slot = s.borrow_mut();
        if slot.len() < buf.len() {
            *slot = buf;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_nests() {
        let first = with_scratch(100, |b| {
            b.fill(1.0);
            b.as_ptr() as usize
        });
        assert_eq!(first % 64, 0, "not on a cache line");
        // The same thread gets the same memory back, with what was left in it.
        let (again, kept) = with_scratch(50, |b| (b.as_ptr() as usize, b[49]));
        assert_eq!((again, kept), (first, 1.0));
        // A nested user gets its own buffer, not an alias.
        with_scratch(10, |outer| {
            outer.fill(2.0);
            with_scratch(10, |inner| {
                assert_ne!(inner.as_ptr(), outer.as_ptr());
                inner.fill(3.0);
            });
            assert!(outer.iter().all(|&v| v == 2.0));
        });
    }
}
