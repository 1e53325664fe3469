//! The call's JSON arguments → Cedar values, checked against the schema.
//!
//! Plain conversion (documented for policy authors in `policies/README.md`):
//! objects → records, strings → String, bools → Bool, integers → Long, floats
//! with an integral value (`4.0`) → Long, other floats → `decimal` when they
//! have at most 4 fraction digits and fit its range, else a String of the
//! number; arrays → Sets; `null` → the attribute (or set element) is omitted.
//!
//! Where the schema declares an argument's type ([`Shape`]) the value must
//! have it, or the call is denied: strict validation assumed that type when
//! it accepted the policies, and a value of another type would make
//! comparisons silently false (`"cpus": "64"` vs `context.args.cpus > 8`).
//! Declared `decimal`s take integers too; `ipaddr`, `datetime` and `duration`
//! are built from strings. Undeclared attributes are dropped: no validated
//! policy can read them.

use std::collections::HashMap;

use cedar_policy::RestrictedExpression;
use serde_json::Value;

use crate::reads::Reads;

/// Cedar's `decimal` is an i64 scaled by 10^4: integer parts up to this bound fit.
const DECIMAL_MAX_INT_PART: u64 = 922_337_203_685_476;

/// A schema type, as far as conversion from JSON cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// A record: attribute → (shape, required).
    Record(HashMap<String, (Shape, bool)>),
    Set(Box<Shape>),
    String,
    Long,
    Bool,
    Decimal,
    /// `ipaddr`, `datetime`, `duration`: built from a JSON string.
    Ext(&'static str),
    /// An entity type (or a type this module cannot resolve): no JSON value
    /// may stand for it — an agent must not be able to name an entity.
    Opaque,
}

impl Shape {
    /// The shape of the context of `action` in a schema's JSON form (as from
    /// `SchemaFragment::to_json_value`), for an un-namespaced schema.
    pub(crate) fn context_of(schema_json: &Value, action: &str) -> Option<Shape> {
        let ns = schema_json.get("")?;
        let common = ns.get("commonTypes").and_then(Value::as_object);
        let ctx = ns
            .get("actions")?
            .get(action)?
            .get("appliesTo")?
            .get("context")?;
        Some(Resolver { common }.shape(ctx, 0))
    }

    /// The shape of a record attribute.
    #[cfg(test)]
    pub(crate) fn attr(&self, name: &str) -> Option<&Shape> {
        match self {
            Shape::Record(attrs) => attrs.get(name).map(|(s, _)| s),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Shape::Record(_) => "a record (JSON object)",
            Shape::Set(_) => "a set (JSON array)",
            Shape::String => "a String",
            Shape::Long => "a Long (integer)",
            Shape::Bool => "a Bool",
            Shape::Decimal => "a decimal (≤ 4 fraction digits)",
            Shape::Ext(name) => name,
            Shape::Opaque => "an entity (never settable from arguments)",
        }
    }
}

struct Resolver<'a> {
    common: Option<&'a serde_json::Map<String, Value>>,
}

impl Resolver<'_> {
    /// Common types may refer to each other; Cedar forbids cycles, the depth
    /// bound only guards this code against a malformed document.
    fn shape(&self, ty: &Value, depth: usize) -> Shape {
        if depth > 32 {
            return Shape::Opaque;
        }
        match ty.get("type").and_then(Value::as_str) {
            Some("Record") => {
                let attrs = ty
                    .get("attributes")
                    .and_then(Value::as_object)
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| {
                                let required =
                                    v.get("required").and_then(Value::as_bool) != Some(false);
                                (k.clone(), (self.shape(v, depth + 1), required))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Shape::Record(attrs)
            }
            Some("Set") => ty.get("element").map_or(Shape::Opaque, |e| {
                Shape::Set(Box::new(self.shape(e, depth + 1)))
            }),
            Some("Extension" | "EntityOrCommon" | "Entity") => {
                match ty.get("name").and_then(Value::as_str) {
                    Some(name) => self.named(name, depth),
                    None => Shape::Opaque,
                }
            }
            Some(name) => self.named(name, depth),
            None => Shape::Opaque,
        }
    }

    fn named(&self, name: &str, depth: usize) -> Shape {
        if let Some(def) = self.common.and_then(|c| c.get(name)) {
            return self.shape(def, depth + 1);
        }
        match name.strip_prefix("__cedar::").unwrap_or(name) {
            "String" => Shape::String,
            "Long" => Shape::Long,
            "Bool" | "Boolean" => Shape::Bool,
            "decimal" => Shape::Decimal,
            "ipaddr" => Shape::Ext("ipaddr"),
            "datetime" => Shape::Ext("datetime"),
            "duration" => Shape::Ext("duration"),
            _ => Shape::Opaque,
        }
    }
}

/// The `args` record for a call: only the attributes `reads` names (what the
/// slice's policies can observe), each typed by `shape` when the schema gives
/// one. `None`/`null` is the empty record; anything but an object is refused
/// (MCP arguments are objects).
pub(crate) fn args_record(
    args: Option<&Value>,
    shape: Option<&Shape>,
    reads: &Reads,
) -> Result<RestrictedExpression, String> {
    let map = match args {
        None | Some(Value::Null) => return record(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("the call's arguments are not a JSON object".to_owned()),
    };
    let declared = match shape {
        Some(Shape::Record(attrs)) => Some(attrs),
        _ => None,
    };
    let mut fields = Vec::new();
    for (k, v) in map {
        if v.is_null() || !reads.covers(k) {
            continue;
        }
        match declared {
            Some(attrs) => match attrs.get(k) {
                Some((s, _)) => fields.push((k.clone(), typed(v, s, k)?)),
                None => continue, // undeclared: no validated policy can read it
            },
            None => fields.push((k.clone(), plain(v)?)),
        }
    }
    if let Some(attrs) = declared {
        for (k, (_, required)) in attrs {
            if *required && reads.covers(k) && map.get(k).is_none_or(Value::is_null) {
                return Err(format!("argument {k} is required by the schema"));
            }
        }
    }
    record(fields)
}

fn record(fields: Vec<(String, RestrictedExpression)>) -> Result<RestrictedExpression, String> {
    // JSON object keys are unique, so this cannot fail; keep it total anyway.
    RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
}

/// Converts `v` as schema type `shape`; the error names the argument path.
fn typed(v: &Value, shape: &Shape, path: &str) -> Result<RestrictedExpression, String> {
    let mismatch = || {
        Err(format!(
            "argument {path} must be {}, not {}",
            shape.describe(),
            json_kind(v)
        ))
    };
    Ok(match (shape, v) {
        (Shape::String, Value::String(s)) => RestrictedExpression::new_string(s.clone()),
        (Shape::Bool, Value::Bool(b)) => RestrictedExpression::new_bool(*b),
        (Shape::Long, Value::Number(n)) => match as_long(n) {
            Some(i) => RestrictedExpression::new_long(i),
            None => return mismatch(),
        },
        (Shape::Decimal, Value::Number(n)) => match as_decimal(n) {
            Some(text) => RestrictedExpression::new_decimal(text),
            None => return mismatch(),
        },
        (Shape::Ext("ipaddr"), Value::String(s)) => RestrictedExpression::new_ip(s),
        (Shape::Ext("datetime"), Value::String(s)) => RestrictedExpression::new_datetime(s),
        (Shape::Ext("duration"), Value::String(s)) => RestrictedExpression::new_duration(s),
        (Shape::Set(elem), Value::Array(items)) => RestrictedExpression::new_set(
            items
                .iter()
                .filter(|i| !i.is_null())
                .map(|i| typed(i, elem, &format!("{path}[]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        (Shape::Record(attrs), Value::Object(map)) => {
            let mut fields = Vec::new();
            for (k, (s, required)) in attrs {
                match map.get(k) {
                    Some(item) if !item.is_null() => {
                        fields.push((k.clone(), typed(item, s, &format!("{path}.{k}"))?));
                    }
                    _ if *required => {
                        return Err(format!("argument {path}.{k} is required by the schema"));
                    }
                    _ => {}
                }
            }
            record(fields)?
        }
        _ => return mismatch(),
    })
}

/// The plain rules, for arguments the schema gives no type for.
fn plain(v: &Value) -> Result<RestrictedExpression, String> {
    Ok(match v {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => match (as_long(n), as_decimal(n)) {
            (Some(i), _) => RestrictedExpression::new_long(i),
            (None, Some(text)) => RestrictedExpression::new_decimal(text),
            (None, None) => RestrictedExpression::new_string(n.to_string()),
        },
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .filter(|i| !i.is_null())
                .map(plain)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(map) => record(
            map.iter()
                .filter(|(_, item)| !item.is_null())
                .map(|(k, item)| Ok((k.clone(), plain(item)?)))
                .collect::<Result<Vec<_>, String>>()?,
        )?,
        // Filtered out by every caller.
        Value::Null => record(Vec::new())?,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Integers, and floats with an integral value, that fit an i64.
fn as_long(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.is_u64() {
        return None; // above i64::MAX
    }
    let f = n.as_f64()?;
    // [-2^63, 2^63): i64::MAX as f64 rounds up to 2^63, so the bound is exclusive.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        #[allow(clippy::cast_possible_truncation)] // integral and in range, checked above
        return Some(f as i64);
    }
    None
}

/// The number as Cedar decimal text, if it is exact in ≤ 4 fraction digits
/// and its integer part fits.
fn as_decimal(n: &serde_json::Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() <= DECIMAL_MAX_INT_PART).then(|| format!("{i}.0"));
    }
    if n.is_u64() {
        return None;
    }
    decimal_text(n.as_f64()?)
}

/// `f` as Cedar decimal text (`-12.5`), if its shortest exact rendering has at
/// most 4 fraction digits and its integer part fits.
pub(crate) fn decimal_text(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    // Rust's `Display` for f64 is the shortest round-trip form, never exponential.
    let text = f.to_string();
    let (int_part, frac) = text.split_once('.').unwrap_or((text.as_str(), "0"));
    if frac.is_empty() || frac.len() > 4 {
        return None;
    }
    let digits = int_part.strip_prefix('-').unwrap_or(int_part);
    let magnitude: u64 = digits.parse().ok()?;
    if magnitude > DECIMAL_MAX_INT_PART {
        return None;
    }
    Some(format!("{int_part}.{frac}"))
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
