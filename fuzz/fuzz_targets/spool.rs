//! `decode_spool` on arbitrary bytes: a spool is read back from disk after its writer died,
//! so it must never panic, whatever the file holds; what it reads must encode and decode
//! again to the same records, and a cut-off copy must read as a prefix of them.
#![no_main]

use airlock_audit::{decode_spool, encode_spool, SpoolEnd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let contents = decode_spool(data);
    if matches!(contents.end, SpoolEnd::Unsupported { .. }) {
        assert!(contents.records.is_empty());
        return;
    }
    let bytes = encode_spool(&contents.records).expect("decoded records encode");
    let again = decode_spool(&bytes);
    assert_eq!(again.end, SpoolEnd::Complete);
    assert_eq!(again.records, contents.records);
    // A torn copy of the re-encoding keeps every entry before the cut and nothing invented.
    let cut = data.len() % (bytes.len() + 1);
    let torn = decode_spool(&bytes[..cut]);
    assert!(matches!(torn.end, SpoolEnd::Complete | SpoolEnd::Torn { .. }), "{:?}", torn.end);
    assert_eq!(torn.records[..], contents.records[..torn.records.len()]);
});
