#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 /outer /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
";

#[test]
fn mountinfo_lines_give_the_hierarchies() {
    let found: Vec<(&str, &str, &str)> = mounts(MOUNTINFO)
        .map(|m| (m.point, m.fstype, m.options))
        .collect();
    assert_eq!(found.len(), 5);
    assert_eq!(found[1], ("/sys/fs/cgroup/unified", "cgroup2", "rw"));
    assert_eq!(
        found[4],
        ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct")
    );
    // A mount whose root is below the hierarchy's root: the group path is taken relative.
    let pids = mounts(MOUNTINFO).nth(3).unwrap();
    assert_eq!(
        pids.join("/outer/inner"),
        Path::new("/sys/fs/cgroup/pids/inner")
    );
}

#[test]
fn a_v2_hierarchy_without_controllers_is_not_used() {
    // The unified mount above does not exist here with controllers; detection says why.
    let err = v2_parent(
        "31 30 0:27 / /nonexistent/cgroup2 rw - cgroup2 cgroup2 rw\n",
        "0::/\n",
    )
    .unwrap_err();
    assert!(err.contains("/nonexistent/cgroup2"), "{err}");
    assert_eq!(v2_parent("", "").unwrap_err(), "no cgroup2 mount");
}

#[test]
fn detection_names_a_mechanism() {
    let m = detect();
    assert!(["cgroup v2", "cgroup v1", "rlimits"].contains(&m.name()));
    if let Mechanism::None { why } = &m {
        assert!(why.contains("v2:") && why.contains("v1:"), "{why}");
    }
}

#[test]
fn groups_left_by_dead_airlocks_are_swept_and_live_ones_kept() {
    let parent = tempfile::tempdir().unwrap();
    let dead = (100_000..4_194_304u32)
        .find(|p| !Path::new("/proc").join(p.to_string()).exists())
        .unwrap();
    let names = [
        format!("airlock-{dead}-0"),
        format!("airlock-{}-3", std::process::id()),
        "airlock-1-0".to_owned(), // init is alive: not ours to touch
        "someone-else".to_owned(),
        format!("airlock-{dead}-1"),
    ];
    for n in &names {
        std::fs::create_dir(parent.path().join(n)).unwrap();
    }
    // A group that still holds something cannot be removed (a plain directory stands in).
    std::fs::write(parent.path().join(&names[4]).join("x"), "").unwrap();
    sweep_stale(parent.path());
    let left: std::collections::BTreeSet<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: std::collections::BTreeSet<String> =
        [names[2].clone(), names[3].clone(), names[4].clone()].into();
    assert_eq!(left, want);
}
