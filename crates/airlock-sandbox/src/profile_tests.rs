#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn the_default_profile_enforces_every_layer() {
    let p = Profile::default();
    assert_eq!(p.name, "default");
    for layer in Layer::ALL {
        assert!(p.wants(layer), "{layer} should be on");
    }
    assert_eq!(p.network, Network::None);
    assert!(p.private_tmp);
    assert!(p.write.is_empty());
    assert_eq!(p.cpu_seconds, Some(DEFAULT_CPU_SECONDS));
    assert_eq!(p.wall_clock, None);
}

#[test]
fn layer_names_round_trip_and_match_the_config() {
    for layer in Layer::ALL {
        assert_eq!(Layer::from_name(layer.as_str()), Some(layer));
        assert!(airlock_config::SandboxLayer::from_name(layer.as_str()).is_some());
    }
    let mut cfg = airlock_config::SandboxProfile::default();
    cfg.off.insert(airlock_config::SandboxLayer::Seccomp);
    let p = Profile::from_config("x", &cfg);
    assert!(!p.wants(Layer::Seccomp));
    assert!(p.wants(Layer::Landlock));
}

#[test]
fn the_command_line_names_what_the_server_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.py");
    std::fs::write(&script, "").unwrap();
    let served = dir.path().join("docs");
    std::fs::create_dir(&served).unwrap();
    let mut p = Profile::default();
    let before = p.read.clone();
    p.read_command(
        std::path::Path::new("/usr/bin/python3"),
        &[
            script.display().to_string(),
            "--root".into(),
            served.display().to_string(),
            "/nonexistent/x".into(),
        ],
    );
    // The interpreter is under a system path already; the script and the directory are added.
    let added: Vec<_> = p.read[before.len()..].to_vec();
    assert_eq!(
        added,
        [
            script.canonicalize().unwrap(),
            served.canonicalize().unwrap()
        ]
    );
    assert!(p.write.is_empty());
}
