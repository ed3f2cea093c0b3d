//! Allocator settings for the agent binary (mimalloc, set as the global allocator in main.rs).

/// `mi_option_purge_delay` in mimalloc 2's `mimalloc.h` (the `mi_option_e` enum; the Rust
/// bindings do not name it). Checked against the library's default below.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays committed before mimalloc returns it to the OS, in ms.
/// mimalloc's default (10 ms) is shorter than the agent's drain interval: every batch of events
/// freed its pages with madvise and faulted them back in on the next one (about 500 page faults
/// a second at 8k requests/s, ~6% of the agent's CPU in a profile). A second keeps the working
/// set of a steady load mapped; what a burst allocated still goes back once it is over.
const PURGE_DELAY_MS: std::ffi::c_long = 1_000;

/// Applies the settings; call before the first threads start.
pub fn configure() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_the_library_defaults_to_10_ms() {
        // SAFETY: reads mimalloc's option table.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // Its neighbours default to 1 (eager_commit_delay) and 0 (use_numa_nodes): a shifted
        // index would not read 10.
        assert_eq!(before, 10, "mimalloc's purge_delay default");
        configure();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
}
