//! `canonical_json` on any JSON serde_json accepts: it must be a fixed point
//! (parse the canonical bytes, canonicalise again: same bytes) and must not
//! depend on how the input was spelled.
#![no_main]

use airlock_protocol::canonical_json;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let once = canonical_json(&value);
    let back: Value = serde_json::from_slice(&once).expect("canonical JSON parses");
    assert_eq!(canonical_json(&back), once, "not idempotent");
    // Pretty-printed input (another spelling) canonicalises the same way.
    let pretty = serde_json::to_vec_pretty(&value).expect("serialises");
    let from_pretty: Value = serde_json::from_slice(&pretty).expect("pretty JSON parses");
    assert_eq!(canonical_json(&from_pretty), once, "depends on spelling");
});
