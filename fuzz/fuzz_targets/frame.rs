//! `parse_frame` on arbitrary bytes: it must never panic, only refuse with
//! -32700/-32600; what it accepts must have a stable digest and must survive
//! being written out and parsed again; every refusal must make a valid
//! JSON-RPC error line, and so must every refusal that echoes the frame's
//! raw id.
#![no_main]

use airlock_protocol::{
    canonical_json, digest_json, error_response, error_response_raw_id, parse_frame,
    raw_id_of_refused, Limits, INVALID_REQUEST, PARSE_ERROR,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_frame_bytes: 64 * 1024 };
    match parse_frame(data, &limits) {
        Ok(frame) => {
            assert!(data.starts_with(frame.raw()));
            let digest = digest_json(frame.value());
            assert_eq!(digest, digest_json(frame.value()));
            // The canonical form is plain JSON that reads back to the same digest.
            let canonical = canonical_json(frame.value());
            let back: Value = serde_json::from_slice(&canonical).expect("canonical JSON parses");
            assert_eq!(digest_json(&back), digest);
            // Re-serialised, the frame is accepted again with the same meaning.
            let again = serde_json::to_vec(frame.value()).expect("serialises");
            let reparsed = parse_frame(&again, &limits).expect("re-serialised frame is accepted");
            assert_eq!(reparsed.kind(), frame.kind());
            assert_eq!(reparsed.value(), frame.value());
        }
        Err(e) => {
            assert!(e.code == PARSE_ERROR || e.code == INVALID_REQUEST, "{e:?}");
            let line = error_response(e.id.as_ref(), e.code, &e.message, None);
            assert!(!line.contains(&b'\n'));
            let v: Value = serde_json::from_slice(&line).expect("error line is JSON");
            assert_eq!(v["error"]["code"], Value::from(e.code));
            // Airlock reads its own error lines.
            assert!(parse_frame(&line, &Limits::default()).is_ok());
            // An echoed id is the frame's own bytes, in a line that is one JSON object.
            if let Some(raw) = raw_id_of_refused(data) {
                let line = error_response_raw_id(&raw, e.code, &e.message);
                assert!(!line.contains(&b'\n'));
                #[derive(serde::Deserialize)]
                struct Echo<'a> {
                    #[serde(borrow)]
                    id: &'a serde_json::value::RawValue,
                }
                let echo: Echo<'_> = serde_json::from_slice(&line).expect("echo line is JSON");
                assert_eq!(echo.id.get(), raw);
            }
        }
    }
});
