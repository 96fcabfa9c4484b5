//! # Heap accounting
//!
//! The global allocator is the system's, counted (`stats_alloc`): bytes allocated and not yet
//! freed, and allocations made. `/metrics` shows them (`roundtable_heap_bytes`,
//! `roundtable_heap_allocations_total`), and the soak compares the live heap before and after
//! its churn: a leak shows there even while the allocator keeps freed pages mapped (the RSS
//! grows with fragmentation and returns nothing, so RSS alone cannot tell the two apart). The
//! count covers what Rust allocates; SQLite's own allocations (its page cache, bounded by
//! `cache_size`) go to the C allocator and are not in it. It costs a few atomic additions per
//! allocation (docs/PERFORMANCE.md); the cargo feature
//! `heap-stats` (on by default) turns it on, so a build without it measures that cost.

#[cfg(feature = "heap-stats")]
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, by this whole process (0 without `heap-stats`).
pub fn live_bytes() -> u64 {
    #[cfg(feature = "heap-stats")]
    {
        // A reallocation is counted in these two already (its growth or its shrinking).
        let s = GLOBAL.stats();
        s.bytes_allocated.saturating_sub(s.bytes_deallocated) as u64
    }
    #[cfg(not(feature = "heap-stats"))]
    0
}

/// Allocations made so far, reallocations not counted (0 without `heap-stats`).
pub fn allocations() -> u64 {
    #[cfg(feature = "heap-stats")]
    {
        GLOBAL.stats().allocations as u64
    }
    #[cfg(not(feature = "heap-stats"))]
    0
}

#[cfg(all(test, feature = "heap-stats"))]
mod tests {
    #[test]
    fn the_live_heap_counts_what_is_held() {
        let before = super::live_bytes();
        let mut held = vec![7u8; 4 << 20];
        let during = super::live_bytes();
        assert!(
            during >= before + (4 << 20) - (1 << 20),
            "{before} → {during}"
        );
        // Grown by reallocation: counted once (the test threads allocate too: loose bounds).
        held.reserve_exact(8 << 20);
        let grown = super::live_bytes();
        assert!(
            grown >= during + (7 << 20) && grown < during + (10 << 20),
            "{during} → {grown}"
        );
        drop(held);
        let after = super::live_bytes();
        assert!(after < grown - (11 << 20), "{grown} → {after}");
        assert!(super::allocations() > 0);
    }
}
