//! The `kpnode` binary: everything lives in the library.

/// mimalloc: a node allocates and frees many small buffers per certificate (frames, records,
/// documents) across threads; glibc's allocator spent about a fifth of the CPU time of
/// `kpnode bench` doing it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    allocator::give_memory_back_sooner();
    kp_node::cli::main()
}

/// mimalloc's options, set through its C interface (the Rust bindings name these functions only
/// with a feature that needs a crate this build does not have).
mod allocator {
    use std::ffi::{c_int, c_long};

    /// `mi_option_purge_delay` in the `mi_option_e` of mimalloc 3 (the version libmimalloc-sys
    /// builds): how long, in ms, memory a thread freed is kept before it is given back to the
    /// system. Its default there is 1000.
    pub const PURGE_DELAY: c_int = 15;

    /// The purge delay a node runs with, unless `MIMALLOC_PURGE_DELAY` says otherwise.
    pub const NODE_PURGE_DELAY_MS: c_long = 1;

    #[allow(unsafe_code)]
    mod ffi {
        use std::ffi::{c_int, c_long};
        extern "C" {
            #[cfg(test)]
            pub fn mi_option_get(option: c_int) -> c_long;
            pub fn mi_option_set(option: c_int, value: c_long);
        }
    }

    #[cfg(test)]
    #[allow(unsafe_code)]
    pub fn get(option: c_int) -> c_long {
        // SAFETY: mimalloc's own function, linked into this binary; it reads one option.
        unsafe { ffi::mi_option_get(option) }
    }

    /// A node under a bulk load frees large buffers (sled's, a batch's) at a high rate. With
    /// mimalloc's 1000 ms delay, the exporter of `kpnode bench --processes --batch 500
    /// --concurrency 4` peaked at 143–147 MB; with 1 ms, at 113–126 MB, for 6–11% more CPU
    /// per certificate (the README's performance section). An operator's
    /// `MIMALLOC_PURGE_DELAY` (or its older name `MIMALLOC_RESET_DELAY`) is left to win.
    #[allow(unsafe_code)]
    pub fn give_memory_back_sooner() {
        if !operator_sets_purge_delay() {
            // SAFETY: mimalloc's own function; options may be changed while it runs.
            unsafe { ffi::mi_option_set(PURGE_DELAY, NODE_PURGE_DELAY_MS) };
        }
    }

    /// Whether the environment sets the purge delay, as mimalloc reads it: either name, in any
    /// case.
    fn operator_sets_purge_delay() -> bool {
        std::env::vars_os().any(|(name, _)| {
            let name = name.to_string_lossy();
            ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"].iter().any(|n| name.eq_ignore_ascii_case(n))
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The option number is mimalloc 3's purge delay: it and its neighbours have their
        /// defaults (the deprecated eager commit delay 1, purge delay 1000, NUMA nodes 0), and
        /// setting it sets it; an operator's own setting is left alone.
        #[test]
        fn the_purge_delay_option_is_the_one_set() {
            let before = get(PURGE_DELAY);
            give_memory_back_sooner();
            if operator_sets_purge_delay() {
                assert_eq!(get(PURGE_DELAY), before, "the operator's purge delay is kept");
            } else {
                assert_eq!((get(PURGE_DELAY - 1), before, get(PURGE_DELAY + 1)), (1, 1000, 0));
                assert_eq!(get(PURGE_DELAY), NODE_PURGE_DELAY_MS);
            }
        }
    }
}
