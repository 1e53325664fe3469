//! The call's JSON arguments → Cedar values, guided by the schema's context type.
//!
//! Conversion (documented for policy authors in `policies/README.md`):
//! objects → records, strings → String, bools → Bool, integers → Long, floats
//! with an integral value (`4.0`) → Long, other floats → `decimal` when they
//! have at most 4 fraction digits and fit its range, else a String of the
//! number; arrays → Sets; `null` → the attribute (or set element) is omitted.
//! Where the schema declares a `decimal`, integers become decimals too.
//!
//! Attributes the schema does not declare are dropped: strict validation
//! guarantees no policy can read them, and dropping them lets the engine
//! type-check what remains against the schema, so an agent cannot send
//! `"cpus": "64"` where policies compare `context.args.cpus` as a Long.

use std::collections::HashMap;

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Cedar's `decimal` is an i64 scaled by 10^4: integer parts up to this bound fit.
const DECIMAL_MAX_INT_PART: u64 = 922_337_203_685_476;

/// The part of a schema type that guides conversion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// A record: only these attributes are kept.
    Record(HashMap<String, Shape>),
    /// A set of elements of this shape.
    Set(Box<Shape>),
    /// The `decimal` extension type.
    Decimal,
    /// Anything else (String, Long, Bool, entities, other extensions, or a
    /// type this module could not resolve): converted by the plain rules.
    Other,
}

impl Shape {
    /// The shape of the context of `action` in a schema's JSON form (as from
    /// `SchemaFragment::to_json_value`), for Airlock's un-namespaced schema.
    pub(crate) fn context_of(schema_json: &Value, action: &str) -> Option<Shape> {
        let ns = schema_json.get("")?;
        let common = ns.get("commonTypes").and_then(Value::as_object);
        let ctx = ns
            .get("actions")?
            .get(action)?
            .get("appliesTo")?
            .get("context")?;
        let resolver = Resolver { common };
        Some(resolver.shape(ctx, 0))
    }

    pub(crate) fn attr(&self, name: &str) -> Option<&Shape> {
        match self {
            Shape::Record(attrs) => attrs.get(name),
            _ => None,
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
            return Shape::Other;
        }
        match ty.get("type").and_then(Value::as_str) {
            Some("Record") => {
                let attrs = ty
                    .get("attributes")
                    .and_then(Value::as_object)
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| (k.clone(), self.shape(v, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default();
                Shape::Record(attrs)
            }
            Some("Set") => ty.get("element").map_or(Shape::Other, |e| {
                Shape::Set(Box::new(self.shape(e, depth + 1)))
            }),
            Some("Extension") => match ty.get("name").and_then(Value::as_str) {
                Some("decimal") => Shape::Decimal,
                _ => Shape::Other,
            },
            Some("EntityOrCommon") => match ty.get("name").and_then(Value::as_str) {
                Some(name) => self.named(name, depth),
                None => Shape::Other,
            },
            // `{"type": "Args"}`: a common type named directly.
            Some(name) => self.named(name, depth),
            None => Shape::Other,
        }
    }

    fn named(&self, name: &str, depth: usize) -> Shape {
        if let Some(def) = self.common.and_then(|c| c.get(name)) {
            return self.shape(def, depth + 1);
        }
        match name {
            "decimal" | "__cedar::decimal" => Shape::Decimal,
            _ => Shape::Other,
        }
    }
}

/// Converts the call's arguments to the `args` record. `None`/`null` is the
/// empty record; anything but an object is refused (MCP arguments are objects).
pub(crate) fn args_record(
    args: Option<&Value>,
    shape: Option<&Shape>,
) -> Result<RestrictedExpression, String> {
    match args {
        None | Some(Value::Null) => Ok(RestrictedExpression::new_record(Vec::new())
            .map_err(|e| e.to_string())?),
        Some(v @ Value::Object(_)) => convert(v, shape),
        Some(_) => Err("the call's arguments are not a JSON object".to_owned()),
    }
}

/// Converts one JSON value; `shape` (if known) filters record attributes and
/// picks `decimal` for numbers. Returns an error text only for record
/// construction failures, which cannot happen for JSON objects (unique keys).
fn convert(v: &Value, shape: Option<&Shape>) -> Result<RestrictedExpression, String> {
    Ok(match v {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => number(n, matches!(shape, Some(Shape::Decimal))),
        Value::Array(items) => {
            let elem = match shape {
                Some(Shape::Set(e)) => Some(e.as_ref()),
                _ => None,
            };
            let items = items
                .iter()
                .filter(|i| !i.is_null())
                .map(|i| convert(i, elem))
                .collect::<Result<Vec<_>, _>>()?;
            RestrictedExpression::new_set(items)
        }
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (k, item) in map {
                if item.is_null() {
                    continue;
                }
                let sub = match shape {
                    Some(s @ Shape::Record(_)) => match s.attr(k) {
                        Some(sub) => Some(sub),
                        None => continue, // undeclared: no validated policy can read it
                    },
                    _ => None,
                };
                fields.push((k.clone(), convert(item, sub)?));
            }
            RestrictedExpression::new_record(fields).map_err(|e| e.to_string())?
        }
        // Only reached for a null set element or top-level null, both filtered.
        Value::Null => RestrictedExpression::new_record(Vec::new()).map_err(|e| e.to_string())?,
    })
}

/// Integers → Long; integral floats → Long; other floats → decimal when
/// exact in ≤ 4 fraction digits and in range, else the number as a String.
fn number(n: &serde_json::Number, want_decimal: bool) -> RestrictedExpression {
    if let Some(i) = n.as_i64() {
        return if want_decimal && i.unsigned_abs() <= DECIMAL_MAX_INT_PART {
            RestrictedExpression::new_decimal(format!("{i}.0"))
        } else {
            RestrictedExpression::new_long(i)
        };
    }
    if n.is_u64() {
        // Above i64::MAX: no Cedar number holds it.
        return RestrictedExpression::new_string(n.to_string());
    }
    let Some(f) = n.as_f64() else {
        return RestrictedExpression::new_string(n.to_string());
    };
    // [-2^63, 2^63): i64::MAX as f64 rounds up to 2^63, so the bound is exclusive.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        #[allow(clippy::cast_possible_truncation)] // integral and in range, checked above
        let i = f as i64;
        if !want_decimal || i.unsigned_abs() > DECIMAL_MAX_INT_PART {
            return RestrictedExpression::new_long(i);
        }
    }
    match decimal_text(f) {
        Some(text) => RestrictedExpression::new_decimal(text),
        None => RestrictedExpression::new_string(n.to_string()),
    }
}

/// `f` as Cedar decimal text (`-12.5`), if its shortest exact rendering has at
/// most 4 fraction digits and its integer part fits.
pub(crate) fn decimal_text(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    // Rust's `Display` for f64 is the shortest round-trip form, never exponential.
    let text = f.to_string();
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text.as_str(), "0"),
    };
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
