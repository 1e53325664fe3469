//! A strict JSON reader: serde_json's tokenizer driven by our own visitor,
//! which builds a [`serde_json::Value`] and notes everything that another
//! JSON parser could read differently.
//!
//! serde_json itself already refuses: invalid syntax, trailing data, lone
//! UTF-16 surrogate escapes (when decoding into a string), numbers that
//! overflow `f64`, and nesting deeper than 128. The visitor adds:
//! - duplicate keys (after unescaping) — most parsers keep the last one,
//!   some the first, Rust structs error;
//! - keys that differ only in letter case — Go's `encoding/json` matches
//!   struct fields case-insensitively (`"Name"` fills `name`), so the Go
//!   server could see another value than we do;
//! - the key `__proto__` — JavaScript code that copies objects with
//!   `Object.assign` turns it into a prototype, not a property;
//! - integer literals beyond ±(2^53−1) — JavaScript (and Go's
//!   `interface{}`) round them, Python keeps them exact.
//!
//! An ambiguity does not stop the parse: the value is finished (with `null`
//! in place of an unreadable number) so that the caller can still read a
//! request id that is not itself in doubt and answer it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// 2^53 − 1, the largest integer every JSON peer reads exactly.
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// At most this many characters of a key or literal are echoed in messages.
const SHOW_CHARS: usize = 64;

/// Why [`parse_strict`] refused its input.
#[derive(Debug)]
pub(crate) enum StrictError {
    /// Not JSON, or JSON that serde_json cannot represent faithfully.
    Syntax(serde_json::Error),
    /// Well-formed JSON that peers could read differently.
    Ambiguous {
        reason: String,
        /// The parsed value (with `null` for unreadable numbers).
        value: Value,
        /// The ambiguity is in the keys of the outermost object, so even
        /// its `id` may be in doubt.
        top_level: bool,
    },
}

/// Parses one JSON text strictly (see the module docs).
#[cfg(test)]
pub(crate) fn parse_strict(text: &str) -> Result<Value, StrictError> {
    parse_strict_to(text, u32::MAX)
}

/// [`parse_strict`], building containers only above depth `build_below` (the outermost value is
/// depth 0): deeper ones are checked exactly as strictly, then stand in the result as empty
/// arrays or objects. Scalars at `build_below` are kept.
pub(crate) fn parse_strict_to(text: &str, build_below: u32) -> Result<Value, StrictError> {
    let mut ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Seed {
        ctx: &mut ctx,
        depth: 0,
        build_below,
    }
    .deserialize(&mut de)
    .map_err(StrictError::Syntax)?;
    de.end().map_err(StrictError::Syntax)?;

    // serde_json hands integer literals beyond u64/i64 to us as f64, looking
    // exactly like `1e20`; only the text tells them apart, so look at it, but
    // only when such a large number was seen at all.
    if ctx.big_float && ctx.problem.is_none() {
        if let Some(lit) = long_integer_literal(text) {
            ctx.note(unsafe_integer(lit), false);
        }
    }
    match ctx.problem {
        None => Ok(value),
        Some((reason, top_level)) => Err(StrictError::Ambiguous {
            reason,
            value,
            top_level,
        }),
    }
}

#[derive(Default)]
struct Ctx {
    /// The first ambiguity found, and whether it is in the outermost keys.
    problem: Option<(String, bool)>,
    /// A float of magnitude above 2^53 was read: it may be an integer literal.
    big_float: bool,
}

impl Ctx {
    fn note(&mut self, reason: String, top_level: bool) {
        if self.problem.is_none() {
            self.problem = Some((reason, top_level));
        }
    }

    // The checks every value gets, whether it is built ([`Seed`]) or only checked ([`Check`]).

    /// Whether a signed integer is one every peer reads exactly (else it is noted).
    fn safe_i64(&mut self, n: i64) -> bool {
        let safe = n.unsigned_abs() <= MAX_SAFE_INTEGER;
        if !safe {
            self.note(unsafe_integer(&n.to_string()), false);
        }
        safe
    }

    /// Whether an unsigned integer is one every peer reads exactly (else it is noted).
    fn safe_u64(&mut self, n: u64) -> bool {
        let safe = n <= MAX_SAFE_INTEGER;
        if !safe {
            self.note(unsafe_integer(&n.to_string()), false);
        }
        safe
    }

    /// The float as a JSON number, if finite (else it is noted); remembers a large one, which
    /// may be an integer literal beyond 2^53.
    fn float(&mut self, x: f64) -> Option<Number> {
        if x.abs() > MAX_SAFE_INTEGER as f64 {
            self.big_float = true;
        }
        let n = Number::from_f64(x);
        if n.is_none() {
            // serde_json reports overflow itself; never leave a gap anyway.
            self.note("number is not finite".to_owned(), false);
        }
        n
    }

    /// Notes a key that is refused wherever it stands.
    fn check_key(&mut self, key: &str, top_level: bool) {
        if key == "__proto__" {
            self.note(
                "key \"__proto__\" is refused: JavaScript may read it as a prototype".to_owned(),
                top_level,
            );
        }
    }

    fn duplicate(&mut self, key: &str, top_level: bool) {
        self.note(format!("duplicate key {}", show(key)), top_level);
    }
}

struct Seed<'c> {
    ctx: &'c mut Ctx,
    depth: u32,
    build_below: u32,
}

impl Seed<'_> {
    fn child(&mut self) -> Seed<'_> {
        Seed {
            ctx: self.ctx,
            depth: self.depth + 1,
            build_below: self.build_below,
        }
    }

    /// Containers at this depth are checked, not built.
    fn prunes(&self) -> bool {
        self.depth >= self.build_below
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(if self.ctx.safe_i64(n) {
            Value::from(n)
        } else {
            Value::Null
        })
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(if self.ctx.safe_u64(n) {
            Value::from(n)
        } else {
            Value::Null
        })
    }

    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(self.ctx.float(x).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        if self.prunes() {
            Check { ctx: self.ctx }.visit_seq(seq)?;
            return Ok(Value::Array(Vec::new()));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut access: A) -> Result<Value, A::Error> {
        if self.prunes() {
            Check { ctx: self.ctx }.visit_map(access)?;
            return Ok(Value::Object(Map::new()));
        }
        let top_level = self.depth == 0;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(self.child())?;
            self.ctx.check_key(&key, top_level);
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => self.ctx.duplicate(slot.key(), top_level),
            }
        }
        if let Some((a, b)) =
            case_collision(map.keys().map(String::as_str), |k| map.contains_key(k))
        {
            self.ctx.note(case_reason(&a, &b), top_level);
        }
        Ok(Value::Object(map))
    }
}

fn case_reason(a: &str, b: &str) -> String {
    format!(
        "keys {} and {} differ only in letter case",
        show(a),
        show(b)
    )
}

/// Below the outermost levels of a pruned parse: the same checks as [`Seed`], in the same
/// order (so the first problem noted is the same), without building anything. Never at the
/// top level, so every problem it notes is not one of the outermost keys.
struct Check<'c> {
    ctx: &'c mut Ctx,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.ctx.safe_i64(n);
        Ok(())
    }

    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.ctx.safe_u64(n);
        Ok(())
    }

    fn visit_f64<E>(self, x: f64) -> Result<(), E> {
        self.ctx.float(x);
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check { ctx: self.ctx })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        // Past a handful of keys, duplicates are found by hashing rather than scanning.
        let mut index: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = access.next_key_seed(KeySeed)? {
            access.next_value_seed(Check { ctx: self.ctx })?;
            self.ctx.check_key(&key, false);
            let seen = match &mut index {
                Some(set) => !set.insert(key.clone()),
                None => keys.contains(&key),
            };
            if seen {
                self.ctx.duplicate(&key, false);
                continue;
            }
            keys.push(key);
            if index.is_none() && keys.len() > 16 {
                index = Some(keys.iter().cloned().collect());
            }
        }
        let contains = |k: &str| match &index {
            Some(set) => set.contains(k),
            None => keys.iter().any(|key| key == k),
        };
        if let Some((a, b)) = case_collision(keys.iter().map(|k| k.as_ref()), contains) {
            self.ctx.note(case_reason(&a, &b), false);
        }
        Ok(())
    }
}

/// A key, borrowed from the text when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

fn unsafe_integer(literal: &str) -> String {
    format!(
        "integer {} is outside ±(2^53−1): JavaScript would round it",
        show(literal)
    )
}

/// A key or literal for a message: quoted, escaped, and cut short.
fn show(s: &str) -> String {
    match s.char_indices().nth(SHOW_CHARS) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Two of the (distinct) `keys` of one object that are equal under simple case folding, if any;
/// `contains` says whether the object has a key.
fn case_collision<'k>(
    keys: impl Iterator<Item = &'k str>,
    contains: impl Fn(&str) -> bool,
) -> Option<(String, String)> {
    // Two distinct keys with the same fold cannot both be their own fold, so
    // only keys that change under folding need looking at.
    let mut folded: Vec<(String, &str)> = Vec::new();
    for key in keys {
        if let Some(fold) = fold_case(key) {
            if contains(&fold) {
                return Some((key.to_owned(), fold));
            }
            folded.push((fold, key));
        }
    }
    if folded.len() > 1 {
        folded.sort_unstable();
        for pair in folded.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Some((pair[0].1.to_owned(), pair[1].1.to_owned()));
            }
        }
    }
    None
}

/// The simple case fold of `key`, or `None` when folding leaves it unchanged.
///
/// Meant to catch what Go's `strings.EqualFold` (used by `encoding/json`)
/// treats as equal: per character, lowercase of uppercase, so that `K`, `k`
/// and the Kelvin sign `K`, or `s`, `S` and the long s `ſ`, all fold alike.
pub(crate) fn fold_case(key: &str) -> Option<String> {
    if key.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        out.push(fold_char(c));
    }
    (out != key).then_some(out)
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    // Only one-to-one mappings: that is what "simple" folding means.
    let upper = single(c.to_uppercase()).unwrap_or(c);
    single(upper.to_lowercase()).unwrap_or(c)
}

fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// The first integer literal (no `.`, `e`, `E`) of more than 16 digits in a
/// text already known to be valid JSON. Every such literal exceeds 2^53−1.
fn long_integer_literal(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                // Only ASCII bytes were stepped over, so these are char
                // boundaries.
                let literal = text.get(start..i).unwrap_or_default();
                let digits = literal.trim_start_matches('-');
                if digits.len() > 16 && !digits.contains(['.', 'e', 'E']) {
                    return Some(literal);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
#[path = "strict_tests.rs"]
mod tests;
