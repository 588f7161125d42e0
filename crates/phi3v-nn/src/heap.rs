//! Large freed buffers kept in the heap for the next op to reuse.
//!
//! Every op on flex allocates its output and frees its inputs' buffers when they are last
//! used. glibc hands a buffer above its mmap threshold (at most 32 MB unless told otherwise)
//! straight back to the kernel when it is freed, so the next op's buffer of the same size is
//! mapped afresh: each of its pages faults in on first touch and is zeroed by the kernel,
//! on whichever core touches it. At the released widths one LoRA step allocates and frees
//! dozens of such buffers (`[801, 16384]` f32 is 52 MB), and the faults and zeroing were
//! about a fifth of the step (8.1 s, 6.4 s with the heap kept; docs/benchmarks.md, "Full
//! size").
//!
//! [`keep_freed_buffers`] raises glibc's thresholds so that freed memory stays in the heap,
//! where the next buffer of the same size reuses it, as PyTorch's caching allocator does on
//! GPUs. The process's peak is the same: the heap holds what was once live. What changes is
//! that the resident set stays at its peak after a large step instead of shrinking.

/// Above this size glibc still maps a buffer on its own: 1 GiB, larger than any activation
/// at the released widths and a 2,523-token prefill chunk.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 30;
/// Free memory at the top of the heap kept rather than trimmed: 4 GiB minus one page, the
/// most an `i32` setting allows in whole pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = i32::MAX - 4095;
/// Extra memory requested with each growth of the heap, so that a run of growing buffers
/// does not move the heap's top one buffer at a time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: i32 = 256 << 20;

/// Set to `0` to leave glibc's allocator as it is (a resident set that shrinks after each
/// large step, at the price of the page faults).
pub const ENV_SWITCH: &str = "PHI3V_KEEP_FREED_BUFFERS";

/// Keeps large freed buffers in the heap for reuse (see the module notes), unless
/// [`ENV_SWITCH`] is `0`. Call it once, first thing in a program that trains or runs a
/// large model on the CPU. Returns whether the allocator took the settings: false when
/// switched off, and outside glibc, where it does nothing.
pub fn keep_freed_buffers() -> bool {
    if std::env::var(ENV_SWITCH).is_ok_and(|v| v == "0") {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes the allocator's parameters, which glibc guards
        // with its own lock; it is sound to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// glibc takes every setting (a threshold it thinks too high would be refused, and the
    /// speed-up silently lost).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_buffers());
    }
}
