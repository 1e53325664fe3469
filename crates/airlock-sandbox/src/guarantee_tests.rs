#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn kernel(abi: i64) -> Kernel {
    Kernel {
        landlock_abi: abi,
        cgroup: true,
    }
}

fn without(layers: &[Layer]) -> Profile {
    let mut p = Profile::default();
    p.off.extend(layers.iter().copied());
    p
}

#[test]
fn every_landlock_abi_gets_each_guarantee_from_some_layer() {
    use Layer::*;
    let p = Profile::default();
    for abi in 1..=7 {
        let e = decide(&kernel(abi), &p).unwrap();
        assert_eq!(e.landlock_abi, Some(abi));
        assert_eq!(e.files, [Landlock], "ABI {abi}");
        // Truncation: Landlock from ABI 3, the seccomp filter in its place before.
        let (truncate, by_seccomp) = if abi >= 3 {
            (vec![Landlock], false)
        } else {
            (vec![Seccomp], true)
        };
        assert_eq!(
            (e.truncate, e.seccomp_truncate),
            (truncate, by_seccomp),
            "ABI {abi}"
        );
        // TCP: always the network namespace; Landlock's rules as well from ABI 4.
        let tcp = if abi >= 4 {
            vec![Network, Landlock]
        } else {
            vec![Network]
        };
        assert_eq!(e.tcp, tcp, "ABI {abi}");
        // Host Unix sockets: seccomp and the mount namespace, whatever the ABI.
        assert_eq!(e.unix_sockets, [Seccomp, Namespaces], "ABI {abi}");
        let scope = if abi >= 6 {
            vec![Namespaces, Landlock]
        } else {
            vec![Namespaces]
        };
        assert_eq!(e.scope, scope, "ABI {abi}");
    }
}

#[test]
fn without_seccomp_an_old_landlock_stops_the_sandbox() {
    let p = without(&[Layer::Seccomp]);
    for abi in 1..=2 {
        let err = decide(&kernel(abi), &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "sandbox layer `landlock` cannot be enforced: this kernel's Landlock (ABI \
                 {abi}) does not restrict truncate(2) (ABI 3, Linux 6.2), and the seccomp \
                 layer that refuses it instead is off"
            )
        );
    }
    for abi in 3..=7 {
        let e = decide(&kernel(abi), &p).unwrap();
        assert_eq!(e.truncate, [Layer::Landlock]);
        assert!(!e.seccomp_truncate);
        assert_eq!(e.unix_sockets, [Layer::Namespaces]);
    }
}

#[test]
fn a_kernel_without_landlock_is_refused_unless_landlock_is_off() {
    for abi in [0, -38, -95] {
        let err = decide(&kernel(abi), &Profile::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "sandbox layer `landlock` cannot be enforced: this kernel has no Landlock"
            ),
            "{err}"
        );
        let e = decide(&kernel(abi), &without(&[Layer::Landlock])).unwrap();
        assert_eq!(e.landlock_abi, None);
        assert!(e.files.is_empty() && e.truncate.is_empty());
        assert!(!e.seccomp_truncate);
        assert_eq!(e.tcp, [Layer::Network]);
    }
}

#[test]
fn turned_off_layers_leave_their_guarantees_unenforced_and_say_so() {
    let p = without(&[Layer::Seccomp, Layer::Namespaces, Layer::Network]);
    let e = decide(&kernel(7), &p).unwrap();
    assert!(e.tcp.is_empty() && e.unix_sockets.is_empty() && e.scope == [Layer::Landlock]);
    let lines = e.lines();
    let sockets = lines
        .iter()
        .find(|(n, _)| *n == "host unix sockets")
        .unwrap();
    assert_eq!(sockets.1, "NOT enforced (its layers are off)");
}

#[test]
fn cpu_percent_without_a_cgroup_is_an_error_not_ignored() {
    let p = Profile {
        cpu_percent: Some(50),
        ..Profile::default()
    };
    let no_cgroup = Kernel {
        landlock_abi: 7,
        cgroup: false,
    };
    let err = decide(&no_cgroup, &p).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "sandbox layer `rlimits` cannot be enforced: `cpu_percent` needs a cgroup"
        ),
        "{err}"
    );
    assert!(decide(&kernel(7), &p).is_ok());
    // Without `cpu_percent`, the rlimits stand in for a missing cgroup as documented.
    assert!(decide(&no_cgroup, &Profile::default()).is_ok());
}

#[test]
fn the_probe_lines_name_the_layer_in_force() {
    let old = decide(&kernel(2), &Profile::default()).unwrap().lines();
    let new = decide(&kernel(7), &Profile::default()).unwrap().lines();
    let get = |lines: &[(&str, String)], name: &str| {
        lines.iter().find(|(n, _)| *n == name).unwrap().1.clone()
    };
    assert!(get(&old, "truncate").starts_with("seccomp refuses truncate(2)"));
    assert_eq!(get(&new, "truncate"), "Landlock ABI 7");
    assert_eq!(get(&old, "tcp"), "network namespace (no route out)");
    assert_eq!(
        get(&new, "tcp"),
        "network namespace (no route out) + Landlock ABI 7 TCP rules"
    );
}

#[test]
fn named_unix_sockets_leave_the_filesystem_view_alone_to_hide_the_others() {
    let mut p = without(&[]);
    p.unix_sockets = vec!["/run/app.sock".into()];
    let e = decide(&kernel(7), &p).unwrap();
    assert_eq!(e.unix_sockets, [Layer::Namespaces]);
    let mut p = without(&[Layer::Namespaces]);
    p.unix_sockets = vec!["/run/app.sock".into()];
    assert!(decide(&kernel(7), &p).is_err());
}
