use proptest::prelude::*;

use super::*;

fn parse_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
    let mut p = SseParser::new(1024);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out)?;
    }
    Ok(out)
}

#[test]
fn events_split_on_blank_lines_with_every_line_ending() {
    let events =
        parse_all(&[b"id: 1\ndata: {\"a\":1}\n\nevent: message\r\ndata: x\r\n\r\ndata: y\r\r"])
            .unwrap_or_default();
    assert_eq!(
        events,
        vec![
            SseEvent {
                event: None,
                id: Some("1".into()),
                data: b"{\"a\":1}".to_vec()
            },
            SseEvent {
                event: Some("message".into()),
                id: Some("1".into()),
                data: b"x".to_vec()
            },
            SseEvent {
                event: None,
                id: Some("1".into()),
                data: b"y".to_vec()
            },
        ]
    );
}

#[test]
fn data_lines_join_comments_and_unknown_fields_are_skipped() {
    let events =
        parse_all(&[b": keep-alive\ndata: a\nretry: 10\nfoo: bar\ndata:b\n\n"]).unwrap_or_default();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, b"a\nb");
}

#[test]
fn a_crlf_split_across_reads_is_one_line_ending() {
    let events = parse_all(&[b"data: a\r", b"\n\r", b"\n"]).unwrap_or_default();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, b"a");
}

#[test]
fn an_event_without_data_is_not_dispatched() {
    let events = parse_all(&[b"event: ping\n\nid: 7\n\n"]).unwrap_or_default();
    assert!(events.is_empty());
}

#[test]
fn oversized_events_and_lines_are_refused() {
    let big = vec![b'x'; 2000];
    let mut chunk = b"data: ".to_vec();
    chunk.extend_from_slice(&big);
    assert_eq!(parse_all(&[&chunk]), Err(SseError::TooLong(1024)));
    let mut two = Vec::new();
    for _ in 0..3 {
        two.extend_from_slice(b"data: ");
        two.extend_from_slice(&big[..600]);
        two.push(b'\n');
    }
    assert_eq!(parse_all(&[&two]), Err(SseError::TooLong(1024)));
}

#[test]
fn encoded_events_parse_back() {
    let frame = b"{\n  \"jsonrpc\": \"2.0\",\r\n  \"id\": 1\n}\n";
    let encoded = encode_event(Some("s-3"), frame);
    let events = parse_all(&[&encoded]).unwrap_or_default();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id.as_deref(), Some("s-3"));
    assert_eq!(
        events[0].data,
        b"{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1\n}"
    );
    assert!(events[0].is_message());
}

proptest! {
    /// Any bytes, in any split: no panic, and memory stays bounded by the limit.
    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
        let cut = cut.min(data.len());
        let mut p = SseParser::new(512);
        let mut out = Vec::new();
        let first = p.push(&data[..cut], &mut out);
        if first.is_ok() {
            let _ = p.push(&data[cut..], &mut out);
        }
        prop_assert!(out.iter().all(|e| e.data.len() <= 512));
    }

    /// What the encoder writes, split anywhere, reads back as the same data.
    #[test]
    fn encode_then_parse_round_trips(text in "[a-z{}\":, \\n]{0,200}", cut in 0usize..300) {
        let encoded = encode_event(None, text.as_bytes());
        let cut = cut.min(encoded.len());
        let mut p = SseParser::new(4096);
        let mut out = Vec::new();
        prop_assert!(p.push(&encoded[..cut], &mut out).is_ok());
        prop_assert!(p.push(&encoded[cut..], &mut out).is_ok());
        prop_assert_eq!(out.len(), 1);
        let want = text.strip_suffix('\n').unwrap_or(&text);
        prop_assert_eq!(&out[0].data, &want.as_bytes().to_vec());
    }
}
