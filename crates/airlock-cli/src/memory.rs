//! Giving back the memory that start-up used and the call path never touches again.
//!
//! Loading the config and policies runs a lot of code once: the TOML parser, the Cedar parser
//! (megabytes of generated tables and code), the schema validator. Those pages of the binary
//! stay mapped and count in the resident set, though `airlock run` never runs them again.
//!
//! They are clean pages of a read-only mapping of the executable, so the kernel can always
//! read them back from the page cache. `MADV_DONTNEED` on them changes nothing but the
//! resident set: a page the gateway touches later comes back on its own, with a minor fault
//! (about a microsecond, once). Only mappings that cannot have been written are released:
//! not writable and without a single private (copy-on-write) page, since dropping a private
//! page of a private mapping would lose its contents (relocated data, say). Those of the
//! executable, which the kernel keeps from being written while it runs (`ETXTBSY`), and those
//! of the shared libraries (libc, libm, the loader): a library is replaced by renaming a new
//! file over it, which leaves the mapped one intact, and a library written in place would
//! already break every page of it not yet touched, released or not. Deleted files are left
//! alone.
//!
//! What comes back is what the gateway runs. Release builds group that code (see build.rs and
//! scripts/hot-text.py), so it comes back as a few contiguous pages, not one 64 KiB
//! fault-around window per scattered function.
//!
//! The heap's freed start-up memory goes back too (`malloc_trim`).
#![allow(unsafe_code)]

use std::path::PathBuf;

/// Releases the start-up pages (see the module docs); returns how many bytes of the
/// executable's and the libraries' mappings were released. Best effort: anything unreadable is left alone.
pub(crate) fn release_startup_pages() -> usize {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for region in clean_regions(&smaps, &exe) {
        let Some(len) = region.end.checked_sub(region.start) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of the executable that is read-only and holds
        // no private page (checked above), so discarding its pages loses nothing: every page
        // reads back from the file, unchanged, on its next access. No Rust object lives in
        // it (it is code and constants), so no reference is invalidated.
        let rc =
            unsafe { libc::madvise(region.start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += region.rss_kib * 1024;
        }
    }
    released
}

/// One mapping that is safe to release.
#[derive(Debug, PartialEq, Eq)]
struct Region {
    start: usize,
    end: usize,
    rss_kib: usize,
}

/// The file mappings in `smaps` text (of `exe` or a shared library) that are private, not
/// writable, resident and hold no anonymous (copy-on-write) page.
fn clean_regions(smaps: &str, exe: &std::path::Path) -> Vec<Region> {
    struct Current {
        start: usize,
        end: usize,
        eligible: bool,
        rss_kib: Option<usize>,
        anonymous_kib: Option<usize>,
    }
    let mut out = Vec::new();
    let mut current: Option<Current> = None;
    let flush = |c: Option<Current>, out: &mut Vec<Region>| {
        if let Some(c) = c {
            if let (true, Some(rss), Some(0)) = (c.eligible, c.rss_kib, c.anonymous_kib) {
                if rss > 0 {
                    out.push(Region {
                        start: c.start,
                        end: c.end,
                        rss_kib: rss,
                    });
                }
            }
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            flush(current.take(), &mut out);
            let (start, end, perms, path) = header;
            let bytes = perms.as_bytes();
            let eligible = bytes.len() == 4
                && bytes[0] == b'r'
                && bytes[1] == b'-'
                && bytes[3] == b'p'
                && path.as_deref().is_some_and(|p| releasable_file(p, exe));
            current = Some(Current {
                start,
                end,
                eligible,
                rss_kib: None,
                anonymous_kib: None,
            });
        } else if let Some(c) = current.as_mut() {
            if let Some(v) = field_kib(line, "Rss:") {
                c.rss_kib = Some(v);
            } else if let Some(v) = field_kib(line, "Anonymous:") {
                c.anonymous_kib = Some(v);
            }
        }
    }
    flush(current.take(), &mut out);
    out
}

/// The executable, or a shared library still on disk (see the module docs).
fn releasable_file(path: &std::path::Path, exe: &std::path::Path) -> bool {
    if path == exe {
        return true;
    }
    let name = path.to_string_lossy();
    path.is_absolute() && !name.ends_with(" (deleted)") && name.contains(".so")
}

/// Parses `start-end perms offset dev inode [path]`; `None` for a field line.
fn mapping_header(line: &str) -> Option<(usize, usize, &str, Option<PathBuf>)> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?;
    let _offset = parts.next()?;
    let _dev = parts.next()?;
    let _inode = parts.next()?;
    // A path may hold spaces.
    let rest: Vec<&str> = parts.collect();
    let path = (!rest.is_empty()).then(|| PathBuf::from(rest.join(" ")));
    Some((start, end, perms, path))
}

fn field_kib(line: &str, name: &str) -> Option<usize> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SMAPS: &str = "\
55d000000000-55d000100000 r--p 00000000 08:01 123 /usr/bin/airlock
Rss:                 512 kB
Anonymous:             0 kB
55d000100000-55d000900000 r-xp 00100000 08:01 123 /usr/bin/airlock
Size:               8192 kB
Rss:                4096 kB
Anonymous:             0 kB
55d000900000-55d000a00000 r--p 00900000 08:01 123 /usr/bin/airlock
Rss:                1024 kB
Anonymous:            64 kB
55d000a00000-55d000a10000 rw-p 00a00000 08:01 123 /usr/bin/airlock
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 456 /usr/lib/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7f0000100000-7f0000110000 r--p 00100000 08:01 456 /usr/lib/libc.so.6
Rss:                  16 kB
Anonymous:            16 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 128 kB
Anonymous:           128 kB
7f0000400000-7f0000500000 r-xp 00000000 08:01 789 /tmp/libgone.so (deleted)
Rss:                  64 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 r--p 00000000 08:01 790 /tmp/audit.db
Rss:                  64 kB
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_and_libraries_are_released() {
        let got = clean_regions(SMAPS, std::path::Path::new("/usr/bin/airlock"));
        assert_eq!(
            got,
            vec![
                Region {
                    start: 0x55d0_0000_0000,
                    end: 0x55d0_0010_0000,
                    rss_kib: 512
                },
                Region {
                    start: 0x55d0_0010_0000,
                    end: 0x55d0_0090_0000,
                    rss_kib: 4096
                },
                Region {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_0010_0000,
                    rss_kib: 900
                },
            ]
        );
    }

    #[test]
    fn releasing_leaves_the_process_working() {
        // Runs on the test binary itself: its code must keep running afterwards.
        release_startup_pages();
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(v.iter().sum::<u64>(), 5050);
        assert!(format!("{:?}", v).len() > 100);
    }
}
