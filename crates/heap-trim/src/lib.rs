//! Hands the memory glibc's malloc keeps after the program freed it back to the kernel.
//!
//! glibc returns freed memory to the kernel only from the top of each arena. When many
//! short-lived allocations (TLS handshakes, JSON bodies) are freed between long-lived ones,
//! the freed pages stay resident. `malloc_trim(0)` walks every arena and releases each whole
//! free page inside it. Other allocators (musl's, which the container image links) return
//! memory on their own and have no such call: there this does nothing.

/// Asks the allocator to release the free pages it holds; true when it released any.
/// Locks each arena in turn while it walks it, so call it from a blocking thread and not
/// often (the gateway calls it after its set of shells changed, at most every few seconds).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_heap() -> bool {
    // SAFETY: malloc_trim takes no pointer and touches only glibc's own free lists, under
    // the same arena locks as every malloc and free; any thread may call it at any time.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    released == 1
}

/// Asks the allocator to release the free pages it holds: a no-op off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_heap() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a large block in the middle of the heap is freed (a live allocation above it
    /// keeps glibc from trimming the top), the call hands pages back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_pages_below_a_live_allocation_are_released() {
        let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 16 * 1024]).collect();
        let keep = Box::new([2u8; 64]);
        drop(blocks);
        assert!(release_free_heap());
        assert_eq!(keep[0], 2);
    }
}
