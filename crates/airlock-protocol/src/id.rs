//! The JSON-RPC request id.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// A JSON-RPC id: a string or an integer (MCP forbids `null` for requests).
///
/// Integers are limited to ±(2^53−1) by the parser, so every peer reads the
/// same number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id {
    /// An integer id, e.g. `"id": 7`.
    Int(i64),
    /// A string id, e.g. `"id": "a-7"`.
    Str(String),
}

impl Id {
    /// The id as a JSON value (`7` or `"a-7"`).
    pub fn to_json(&self) -> Value {
        match self {
            Id::Int(n) => Value::from(*n),
            Id::Str(s) => Value::String(s.clone()),
        }
    }

    /// Reads an id from a JSON value: a string, or an integer within
    /// ±(2^53−1). Anything else (null, float, bool, array, object) is `None`.
    pub fn from_json(v: &Value) -> Option<Id> {
        match v {
            Value::String(s) => Some(Id::Str(s.clone())),
            Value::Number(n) => n
                .as_i64()
                .filter(|i| i.unsigned_abs() <= crate::strict::MAX_SAFE_INTEGER)
                .map(Id::Int),
            _ => None,
        }
    }
}

/// Integers print plainly, strings as they are (no quotes).
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Int(n) => serializer.serialize_i64(*n),
            Id::Str(s) => serializer.serialize_str(s),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Int(n)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::Str(s.to_owned())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::Str(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn display_prints_ints_plainly_and_strings_as_is() {
        assert_eq!(Id::Int(-42).to_string(), "-42");
        assert_eq!(Id::Str("req \"1\"".into()).to_string(), "req \"1\"");
    }

    #[test]
    fn to_json_and_serialize_agree() {
        for id in [Id::Int(7), Id::Str("a-7".into())] {
            assert_eq!(serde_json::to_value(&id).unwrap(), id.to_json());
        }
        assert_eq!(Id::Int(7).to_json(), json!(7));
        assert_eq!(Id::Str("x".into()).to_json(), json!("x"));
    }

    #[test]
    fn from_json_accepts_only_strings_and_safe_integers() {
        assert_eq!(Id::from_json(&json!(1)), Some(Id::Int(1)));
        assert_eq!(Id::from_json(&json!("")), Some(Id::Str(String::new())));
        assert_eq!(
            Id::from_json(&json!(-9007199254740991_i64)),
            Some(Id::Int(-9007199254740991))
        );
        assert_eq!(Id::from_json(&json!(9007199254740992_i64)), None);
        assert_eq!(Id::from_json(&json!(u64::MAX)), None);
        for bad in [
            json!(null),
            json!(1.0),
            json!(true),
            json!([1]),
            json!({"a": 1}),
        ] {
            assert_eq!(Id::from_json(&bad), None, "{bad}");
        }
    }
}
