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
