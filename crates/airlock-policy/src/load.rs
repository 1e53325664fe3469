//! Reading, parsing and strictly validating the schema and the policy files.
//!
//! Each file is parsed on its own so that every Cedar source span is an
//! offset into that file and turns into `file:line:col`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cedar_policy::{
    Effect, Policy, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator,
};

use crate::error::{describe, diagnostic_offset, location, PolicyError};

/// One parsed policy with what Airlock reports about it.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// Carries its final id (`@id`, else `file:line`).
    pub(crate) policy: Policy,
    pub(crate) meta: Meta,
}

/// What a decision reports about a policy.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) effect: Effect,
    pub(crate) location: String,
    pub(crate) reason: Option<String>,
    pub(crate) approval: Option<String>,
}

/// The schema, parsed, with its JSON form (for the context shape).
pub(crate) struct LoadedSchema {
    pub(crate) schema: Schema,
    pub(crate) json: serde_json::Value,
}

/// Parses the schema (Cedar schema syntax); errors carry `file:line:col`.
pub(crate) fn parse_schema(file: &str, text: &str) -> Result<LoadedSchema, PolicyError> {
    let (schema, _warnings) = Schema::from_cedarschema_str(text)
        .map_err(|e| PolicyError::from_diagnostic(file, text, &e, 0, "schema: "))?;
    // The fragment parses the same text; it only fails if the schema did.
    let json = SchemaFragment::from_cedarschema_str(text)
        .map_err(|e| PolicyError::from_diagnostic(file, text, &e, 0, "schema: "))
        .and_then(|(frag, _)| {
            frag.to_json_value()
                .map_err(|e| PolicyError::whole(file, format!("schema: {e}")))
        })?;
    Ok(LoadedSchema { schema, json })
}

/// Expands the configured paths: a directory means its `*.cedar` files, sorted.
pub(crate) fn expand_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| unreadable(p, &e))?;
            let mut files = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| unreadable(p, &e))?.path();
                if path.extension().is_some_and(|x| x == "cedar") && path.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads a file as UTF-8.
pub(crate) fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| unreadable(path, &e))
}

fn unreadable(path: &Path, e: &std::io::Error) -> PolicyError {
    PolicyError::whole(&path.display().to_string(), format!("cannot read: {e}"))
}

/// Parses every file, gives each policy its id, rejects duplicate ids, and
/// validates the whole set against the schema in strict mode. Returns the
/// policies and Cedar's validation warnings (`file:line:col: policy <id>: …`).
pub(crate) fn parse_and_validate(
    schema: &Schema,
    files: &[(String, String)],
) -> Result<(Vec<Loaded>, Vec<String>), PolicyError> {
    let mut all: Vec<Loaded> = Vec::new();
    // id → (file index, start offset) of the policy's source, for errors.
    let mut ids: HashMap<String, (usize, usize)> = HashMap::new();
    for (fi, (file, text)) in files.iter().enumerate() {
        for (policy, start) in parse_file(file, text)? {
            let meta = meta_of(&policy, file, text, start, &ids)?;
            let policy = policy.new_id(PolicyId::new(&meta.id));
            ids.insert(meta.id.clone(), (fi, start));
            all.push(Loaded { policy, meta });
        }
    }

    let set = PolicySet::from_policies(all.iter().map(|l| l.policy.clone()))
        .map_err(|e| PolicyError::whole("<policies>", e.to_string()))?;
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    // Where a diagnostic points: (file index, byte offset into that file).
    let place = |id: &PolicyId, diag: &dyn miette::Diagnostic| -> Option<(usize, usize)> {
        let &(fi, start) = ids.get(AsRef::<str>::as_ref(id))?;
        Some((fi, diagnostic_offset(diag).unwrap_or(start)))
    };
    // Report the first error in file order, at the offending expression.
    let first = result
        .validation_errors()
        .filter_map(|e| Some((place(e.policy_id(), e)?, e)))
        .min_by_key(|(at, _)| *at);
    if let Some(((fi, offset), e)) = first {
        if let Some((file, text)) = files.get(fi) {
            return Err(PolicyError::at(file, text, offset, describe(e)));
        }
    }
    if let Some(e) = result.validation_errors().next() {
        // An error Cedar could not tie to a policy of ours.
        return Err(PolicyError::whole("<policies>", describe(e)));
    }
    let warnings = result
        .validation_warnings()
        .map(|w| {
            let at = place(w.policy_id(), w)
                .and_then(|(fi, offset)| files.get(fi).map(|(f, t)| location(f, t, offset)))
                .unwrap_or_else(|| "<policies>".to_owned());
            format!("{at}: policy {}: {}", w.policy_id(), describe(w))
        })
        .collect();
    Ok((all, warnings))
}

/// Parses one file into its policies, each with the byte offset it starts at.
fn parse_file(file: &str, text: &str) -> Result<Vec<(Policy, usize)>, PolicyError> {
    let set: PolicySet = text.parse().map_err(|e: cedar_policy::ParseErrors| {
        // Report the first error; each carries its own span into `text`.
        match e.iter().next() {
            Some(first) => PolicyError::from_diagnostic(file, text, first, 0, ""),
            None => PolicyError::from_diagnostic(file, text, &e, 0, ""),
        }
    })?;
    if set.templates().next().is_some() {
        return Err(PolicyError::whole(
            file,
            "policy templates (`?principal`, `?resource`) are not supported",
        ));
    }
    let starts = policy_starts(text);
    // Cedar names the policies of a parsed text `policy0`, `policy1`, … in order.
    let mut out = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().enumerate() {
        let id = PolicyId::new(format!("policy{i}"));
        let policy = set.policy(&id).ok_or_else(|| {
            PolicyError::at(
                file,
                text,
                *start,
                "could not match this policy to Cedar's parse (please report)",
            )
        })?;
        out.push((policy.clone(), *start));
    }
    if set.num_of_policies() != out.len() {
        return Err(PolicyError::whole(
            file,
            format!(
                "found {} policies but Cedar parsed {} (please report)",
                out.len(),
                set.num_of_policies()
            ),
        ));
    }
    Ok(out)
}

fn meta_of(
    policy: &Policy,
    file: &str,
    text: &str,
    start: usize,
    taken: &HashMap<String, (usize, usize)>,
) -> Result<Meta, PolicyError> {
    let location = location(file, text, start);
    let id = match policy.annotation("id") {
        Some(id) if id.trim().is_empty() => {
            return Err(PolicyError::at(file, text, start, "@id may not be empty"));
        }
        Some(id) => id.to_owned(),
        None => {
            // `file:line`, or `file:line:col` when a line holds two policies.
            let (line, _) = crate::error::line_col(text, start);
            let short = format!("{file}:{line}");
            if taken.contains_key(&short) {
                location.clone()
            } else {
                short
            }
        }
    };
    if taken.contains_key(&id) {
        return Err(PolicyError::at(
            file,
            text,
            start,
            format!("duplicate policy id {id:?}"),
        ));
    }
    Ok(Meta {
        id,
        effect: policy.effect(),
        location,
        reason: policy.annotation("reason").map(str::to_owned),
        approval: policy.annotation("approval").map(str::to_owned),
    })
}

/// Byte offsets at which each policy of a Cedar policy text starts (its first
/// annotation or its effect keyword). Policies end at a `;` outside string
/// literals and `//` comments; Cedar has no other use for `;` in policies.
pub(crate) fn policy_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut starts = Vec::new();
    let mut in_policy = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            b';' => {
                in_policy = false;
                i += 1;
            }
            c => {
                if !in_policy {
                    starts.push(i);
                    in_policy = true;
                }
                i += 1;
                if c == b'"' {
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
            }
        }
    }
    starts
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
