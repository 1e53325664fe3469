#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

#[test]
fn granted_paths_beneath_hidden_directories_are_shown_again() {
    let hidden = paths(&["/tmp", "/run", "/home", "/root"]);
    let granted = vec![
        (PathBuf::from("/usr"), true),
        (PathBuf::from("/tmp/case/escaper.py"), false),
        (PathBuf::from("/tmp/airlock-sandbox-x"), true),
        (PathBuf::from("/home/alice/project"), true),
        // Beneath a shown path: visible through it (the clone is recursive).
        (PathBuf::from("/home/alice/project/src"), true),
    ];
    let p = plan(&hidden, &granted);
    assert_eq!(p.hide, paths(&["/tmp", "/run", "/home", "/root"]));
    assert_eq!(
        p.show,
        vec![
            Shown {
                path: "/tmp/case/escaper.py".into(),
                dir: false,
                parents: paths(&["/tmp/case"]),
            },
            Shown {
                path: "/tmp/airlock-sandbox-x".into(),
                dir: true,
                parents: vec![],
            },
            Shown {
                path: "/home/alice/project".into(),
                dir: true,
                parents: paths(&["/home/alice"]),
            },
        ]
    );
}

#[test]
fn a_granted_hidden_directory_or_its_parent_keeps_it_visible() {
    let hidden = paths(&["/tmp", "/run", "/home", "/run/user"]);
    let p = plan(
        &hidden,
        &[
            (PathBuf::from("/home"), true),
            (PathBuf::from("/run"), true),
        ],
    );
    assert_eq!(p.hide, paths(&["/tmp"]));
    assert!(p.show.is_empty());
    // Everything readable: nothing hidden.
    assert_eq!(
        plan(&hidden, &[(PathBuf::from("/"), true)]),
        ViewPlan::default()
    );
    // Nested hidden directories: the outer one covers the inner.
    assert_eq!(plan(&hidden, &[]).hide, paths(&["/tmp", "/run", "/home"]));
}

#[test]
fn the_view_is_prepared_for_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let v = prepare(&[dir.path(), Path::new("/usr"), Path::new("/nonexistent/x")]).unwrap();
    assert!(v
        .hide
        .iter()
        .any(|h| h.as_bytes() == b"/tmp" || h.as_bytes() == b"/run"));
    let real = dir.path().canonicalize().unwrap();
    if HIDDEN.iter().any(|h| real.starts_with(h)) {
        assert_eq!(v.show.len(), 1);
        assert_eq!(v.show[0].path.as_bytes(), real.as_os_str().as_bytes());
        assert!(v.show[0].dir);
    }
}
