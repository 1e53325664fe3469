//! Giving back the heap that loading the config and policies used and no longer needs.
//!
//! Parsing the TOML config, the Cedar policies and the schema allocates far more than the
//! result keeps. glibc's `free` returns memory to the system only from the top of the heap, so
//! what start-up freed below the long-lived allocations stays resident, as private memory
//! (`RssAnon`), for the life of the gateway. `malloc_trim(0)` hands those free pages back
//! (`MADV_DONTNEED` on each free run of whole pages, in every arena).
//!
//! Measured (BENCHMARKS.md, "Idle memory"): with the bench config (one permitted tool) the heap
//! has next to nothing free and the trim changes nothing; with 1,000 policies it takes idle
//! `RssAnon` from 15.9 to 9.6 MiB, and a policy reload (SIGHUP) from 24.3 to about 10.5.
//!
//! `airlock run` trims before it spawns the server: a sandboxed server's supervisor and init are
//! forks of the gateway that never exec, so they keep their copy of every page the gateway had
//! at the fork. A page trimmed after the fork leaves the gateway but stays resident in them.
//!
//! Clean pages of the binary and the shared libraries are left alone: the kernel shares them
//! between gateways and drops them when it needs the memory, and releasing them lowers VmRSS,
//! not private memory.
#![allow(unsafe_code)]

/// Returns the heap's free pages to the system (see the module docs). A no-op off glibc.
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_leaves_live_allocations_intact() {
        let kept: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64 * 1024]).collect();
        let freed: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64 * 1024]).collect();
        drop(freed);
        trim_heap();
        for (i, v) in kept.iter().enumerate() {
            assert!(v.iter().all(|&b| usize::from(b) == i));
        }
    }
}
