//! `SseParser` (an upstream's event stream: untrusted bytes) on arbitrary input split at an
//! arbitrary point: it must never panic, no event may exceed the limit, and what the encoder
//! writes for an event's data must parse back to the same data.
#![no_main]

use airlock_http::sse::{encode_event, SseParser};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let mut parser = SseParser::new(LIMIT);
    let mut events = Vec::new();
    if parser.push(&rest[..cut], &mut events).is_ok() {
        let _ = parser.push(&rest[cut..], &mut events);
    }
    for e in &events {
        assert!(e.data.len() <= LIMIT);
        // Re-encoding an event's data reads back as the same data (`\r` never survives a
        // parse, so the data has none).
        let encoded = encode_event(None, &e.data);
        let mut again = SseParser::new(LIMIT + 64);
        let mut out = Vec::new();
        assert!(again.push(&encoded, &mut out).is_ok());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, e.data);
    }
});
