//! The chain-head anchor: a small file outside the database naming the last
//! known head, so that cutting records off the end of the table is detectable.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::record::Head;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorFile {
    seq: u64,
    hash: String,
    written_at: String,
}

/// Atomically replaces the anchor with `head` (JSON `{seq, hash, written_at}`):
/// temp file, fsync, rename, fsync of the directory. Last writer wins; every
/// anchored head was a committed head, so an older anchor only checks less.
pub fn write_anchor(head: &Head, anchor: &Path) -> Result<(), AuditError> {
    if !is_hash(&head.hash) {
        return Err(AuditError::AnchorMalformed {
            path: anchor.to_owned(),
            reason: format!("refusing to write hash {:?}", head.hash),
        });
    }
    let written_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let body = AnchorFile {
        seq: head.seq,
        hash: head.hash.clone(),
        written_at,
    };
    let mut text = serde_json::to_vec(&body).map_err(|e| AuditError::AnchorMalformed {
        path: anchor.to_owned(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');

    let io = |source| AuditError::AnchorIo {
        path: anchor.to_owned(),
        source,
    };
    let tmp = temp_path(anchor);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, anchor)?;
        // The rename itself is durable only once the directory is synced.
        let dir = match anchor.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: a stray temp file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The head named by the anchor; `None` when the file does not exist.
pub fn read_anchor(anchor: &Path) -> Result<Option<Head>, AuditError> {
    let text = match fs::read(anchor) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditError::AnchorIo {
                path: anchor.to_owned(),
                source,
            })
        }
    };
    let body: AnchorFile =
        serde_json::from_slice(&text).map_err(|e| AuditError::AnchorMalformed {
            path: anchor.to_owned(),
            reason: e.to_string(),
        })?;
    if !is_hash(&body.hash) || body.seq == 0 {
        return Err(AuditError::AnchorMalformed {
            path: anchor.to_owned(),
            reason: String::from("seq must be ≥ 1 and hash 64 lowercase hex digits"),
        });
    }
    Ok(Some(Head {
        seq: body.seq,
        hash: body.hash,
    }))
}

/// A temp name beside the anchor, unique per process and call, so concurrent
/// writers never share one.
fn temp_path(anchor: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = anchor
        .file_name()
        .map_or_else(|| "anchor".into(), |n| n.to_string_lossy());
    anchor.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
