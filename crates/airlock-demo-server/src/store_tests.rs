#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn save_then_load_round_trips_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut state = seed_state();
    state.forum_post("internal", "t", "b", "assistant").unwrap();
    save_state(&path, &state).unwrap();
    assert_eq!(load_state(&path).unwrap(), state);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["state.json"]);
}

#[test]
fn open_state_seeds_keeps_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");

    // Missing file: seeded and written at once.
    assert_eq!(open_state(&path, false).unwrap(), seed_state());
    assert_eq!(load_state(&path).unwrap(), seed_state());

    // Existing file: kept.
    let mut changed = seed_state();
    changed.compute_start("x", 1, "img").unwrap();
    save_state(&path, &changed).unwrap();
    assert_eq!(open_state(&path, false).unwrap(), changed);

    // Reset: back to the seed, on disk too.
    assert_eq!(open_state(&path, true).unwrap(), seed_state());
    assert_eq!(load_state(&path).unwrap(), seed_state());
}

#[test]
fn a_corrupt_file_is_an_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    fs::write(&path, b"{ not json").unwrap();
    let err = open_state(&path, false).unwrap_err();
    assert!(format!("{err:#}").contains("parsing"), "{err:#}");
    assert_eq!(fs::read(&path).unwrap(), b"{ not json");
}

#[test]
fn saving_into_a_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/state.json");
    assert!(save_state(&path, &seed_state()).is_err());
    assert!(!path.exists());
}
