//! Which parts of `context` a set of policies can observe.
//!
//! Building a Cedar context costs about a microsecond per value, more than
//! evaluating a simple policy. A slice whose policies never read
//! `context.args` does not need the arguments converted at all, and one that
//! reads only `context.args.cpus` needs only that. The analysis walks each
//! policy's JSON form: every `context.a.b` / `context.a has b` chain is a path
//! that is read; any other use of `context` (e.g. `context == {..}`) reads
//! everything. Leaving out what no policy can observe does not change a
//! decision; the slicing property test compares against the full context.

use std::collections::BTreeMap;

use cedar_policy::Policy;
use serde_json::Value;

/// The paths under `context` that may be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Nothing below this point is read.
    #[default]
    Nothing,
    /// This value is read as a whole.
    All,
    /// Only these attributes are read (each to the depth given).
    Attrs(BTreeMap<String, Reads>),
}

impl Reads {
    /// What the policies read from `context` (their conditions; scopes never
    /// mention it).
    pub(crate) fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Reads {
        let mut reads = Reads::Nothing;
        for p in policies {
            match p.to_json() {
                Ok(json) => walk(&json, &mut reads),
                // Cannot analyse it: assume it reads everything.
                Err(_) => reads = Reads::All,
            }
        }
        reads
    }

    /// Adds what `other` reads.
    pub(crate) fn merge(&mut self, other: &Reads) {
        match (&mut *self, other) {
            (_, Reads::Nothing) | (Reads::All, _) => {}
            (_, Reads::All) => *self = Reads::All,
            (Reads::Nothing, Reads::Attrs(_)) => *self = other.clone(),
            (Reads::Attrs(mine), Reads::Attrs(theirs)) => {
                for (k, v) in theirs {
                    mine.entry(k.clone()).or_default().merge(v);
                }
            }
        }
    }

    /// What is read below attribute `attr`, if anything.
    pub(crate) fn get(&self, attr: &str) -> Option<&Reads> {
        match self {
            Reads::Nothing => None,
            Reads::All => Some(&Reads::All),
            Reads::Attrs(m) => m.get(attr),
        }
    }

    /// Whether attribute `attr` (or something below it) is read.
    pub(crate) fn covers(&self, attr: &str) -> bool {
        self.get(attr).is_some()
    }

    fn add(&mut self, path: &[&str]) {
        let Some((head, rest)) = path.split_first() else {
            *self = Reads::All;
            return;
        };
        match self {
            Reads::All => {}
            Reads::Nothing => {
                let mut child = Reads::Nothing;
                child.add(rest);
                *self = Reads::Attrs(BTreeMap::from([((*head).to_owned(), child)]));
            }
            Reads::Attrs(m) => m.entry((*head).to_owned()).or_default().add(rest),
        }
    }
}

/// `context.a.b` as `["a", "b"]`, if `node` is such a chain.
fn context_path(node: &Value) -> Option<Vec<&str>> {
    if node.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(Vec::new());
    }
    let access = node.get(".")?;
    let mut path = context_path(access.get("left")?)?;
    path.push(access.get("attr")?.as_str()?);
    Some(path)
}

fn walk(node: &Value, reads: &mut Reads) {
    match node {
        Value::Object(map) => {
            // `X.attr` or `X has attr` where X is a `context…` chain.
            for op in [".", "has"] {
                if let Some(access) = map.get(op) {
                    if let Some(mut path) = access.get("left").and_then(context_path) {
                        // `has` may test a chain (`has a.b`): reading `a` covers it.
                        let attr = match access.get("attr") {
                            Some(Value::String(a)) => Some(a.as_str()),
                            Some(Value::Array(a)) => a.first().and_then(Value::as_str),
                            _ => None,
                        };
                        match attr {
                            Some(a) => path.push(a),
                            None => *reads = Reads::All,
                        }
                        reads.add(&path);
                        return;
                    }
                }
            }
            if map.get("Var").and_then(Value::as_str) == Some("context") {
                reads.add(&[]);
                return;
            }
            for v in map.values() {
                walk(v, reads);
            }
        }
        Value::Array(items) => {
            for v in items {
                walk(v, reads);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn reads(conditions: &str) -> Reads {
        let p = Policy::parse(
            None,
            format!("permit(principal, action, resource) {conditions};"),
        )
        .unwrap();
        Reads::of([&p])
    }

    fn attrs(pairs: &[(&str, Reads)]) -> Reads {
        Reads::Attrs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn scope_only_policies_read_nothing() {
        assert_eq!(reads(""), Reads::Nothing);
        assert_eq!(
            reads("when { principal.task == Task::\"t\" }"),
            Reads::Nothing
        );
    }

    #[test]
    fn chains_read_their_paths() {
        let got = reads(
            "when { context.args has channel && context.args.channel == \"public\" } unless { context.approval.granted }",
        );
        assert_eq!(
            got,
            attrs(&[
                ("approval", attrs(&[("granted", Reads::All)])),
                ("args", attrs(&[("channel", Reads::All)])),
            ])
        );
        assert!(got.get("args").unwrap().covers("channel"));
        assert!(!got.get("args").unwrap().covers("cpus"));
        assert!(!got.covers("session"));
        assert_eq!(
            reads("when { context.args has a.b && context[\"args\"][\"c\"] == 1 }"),
            attrs(&[("args", attrs(&[("a", Reads::All), ("c", Reads::All)]))])
        );
    }

    #[test]
    fn merging_unions_the_paths() {
        let mut r = reads("when { context.args.a == 1 }");
        r.merge(&reads(
            "when { context.args has b && context.session.id == \"s\" }",
        ));
        r.merge(&Reads::Nothing);
        let expect = attrs(&[
            ("args", attrs(&[("a", Reads::All), ("b", Reads::All)])),
            ("session", attrs(&[("id", Reads::All)])),
        ]);
        assert_eq!(r, expect);
        r.merge(&reads("when { context.args == {} }"));
        assert_eq!(r.get("args"), Some(&Reads::All));
        r.merge(&Reads::All);
        assert_eq!(r, Reads::All);
    }

    #[test]
    fn other_uses_read_everything_below() {
        assert_eq!(
            reads("when { context has args }"),
            attrs(&[("args", Reads::All)])
        );
        assert_eq!(
            reads("when { context.args == {} }"),
            attrs(&[("args", Reads::All)])
        );
        assert_eq!(reads("when { context == {} }"), Reads::All);
        assert_eq!(reads("when { [context].isEmpty() }"), Reads::All);
        let all = reads("when { context == {} }");
        assert!(all.covers("anything") && all.get("args").unwrap().covers("x"));
    }
}
