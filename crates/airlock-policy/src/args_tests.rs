#![allow(clippy::unwrap_used, clippy::expect_used)]

use cedar_policy::{Context, EvalResult};
use serde_json::json;

use super::*;
use crate::reads::Reads;

/// Converts `args` (an object) and returns Cedar's value of the whole record.
fn eval(args: serde_json::Value, shape: Option<&Shape>) -> EvalResult {
    let rec = args_record(Some(&args), shape, &Reads::All).unwrap();
    let ctx = Context::from_pairs([("args".to_owned(), rec)]).unwrap();
    ctx.get("args").unwrap()
}

/// The Cedar rendering of attribute `x` of `{"x": v}`.
fn one(v: serde_json::Value) -> String {
    one_shaped(v, None)
}

fn one_shaped(v: serde_json::Value, shape: Option<&Shape>) -> String {
    let record_shape = shape.map(|s| Shape::Record([("x".to_owned(), (s.clone(), false))].into()));
    match eval(json!({ "x": v }), record_shape.as_ref()) {
        EvalResult::Record(r) => r.get("x").map(|v| v.to_string()).unwrap_or_default(),
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn scalars_keep_their_type() {
    assert_eq!(one(json!("public")), "\"public\"");
    assert_eq!(one(json!(true)), "true");
    assert_eq!(one(json!(-7)), "-7");
    assert_eq!(one(json!(i64::MAX)), i64::MAX.to_string());
}

#[test]
fn integral_floats_become_longs() {
    assert_eq!(one(json!(4.0)), "4");
    assert_eq!(one(json!(-0.0)), "0");
    assert_eq!(one(json!(1e15)), "1000000000000000");
}

#[test]
fn short_fractions_become_decimals_others_strings() {
    assert_eq!(one(json!(1.5)), "decimal(\"1.5\")");
    assert_eq!(one(json!(-2.25)), "decimal(\"-2.25\")");
    assert_eq!(one(json!(0.1)), "decimal(\"0.1\")");
    assert_eq!(one(json!(0.0001)), "decimal(\"0.0001\")");
    // five fraction digits: not a decimal
    assert_eq!(one(json!(0.00001)), "\"0.00001\"");
    // too large for decimal's i64/10^4 range
    assert_eq!(one(json!(1e16 + 0.5)), "10000000000000000");
    assert_eq!(one(json!(922337203685477.5)), "\"922337203685477.5\"");
    // not representable as Long either
    assert_eq!(one(json!(1e300)), "\"1e+300\"");
    assert_eq!(one(json!(u64::MAX)), format!("\"{}\"", u64::MAX));
}

#[test]
fn declared_decimals_take_integers_too() {
    assert_eq!(
        one_shaped(json!(2), Some(&Shape::Decimal)),
        "decimal(\"2.0\")"
    );
    assert_eq!(
        one_shaped(json!(2.0), Some(&Shape::Decimal)),
        "decimal(\"2.0\")"
    );
    assert_eq!(
        one_shaped(json!(2.5), Some(&Shape::Decimal)),
        "decimal(\"2.5\")"
    );
}

#[test]
fn arrays_become_sets_and_nulls_vanish() {
    assert_eq!(one(json!(["b", "a", "a"])), "[\"a\", \"b\"]");
    assert_eq!(one(json!([null, 1])), "[1]");
    let EvalResult::Record(r) = eval(json!({"x": null, "y": {"z": null, "w": 1}}), None) else {
        panic!("not a record");
    };
    assert!(r.get("x").is_none(), "null attribute omitted");
    let Some(EvalResult::Record(y)) = r.get("y") else {
        panic!("y is a record");
    };
    assert!(y.get("z").is_none());
    assert_eq!(y.get("w"), Some(&EvalResult::Long(1)));
}

#[test]
fn json_escapes_are_plain_records_not_entities() {
    // Cedar's JSON format would read these as an entity / extension value;
    // an agent must not be able to forge either.
    let v = one(json!({"__entity": {"type": "Human", "id": "root"}}));
    assert!(v.starts_with("{\"__entity\": {"), "{v}");
    let v = one(json!({"__extn": {"fn": "decimal", "arg": "1.0"}}));
    assert!(v.starts_with("{\"__extn\": {"), "{v}");
}

#[test]
fn missing_or_null_args_are_the_empty_record_and_non_objects_are_refused() {
    for args in [None, Some(json!(null))] {
        let rec = args_record(args.as_ref(), None, &Reads::All).unwrap();
        let ctx = Context::from_pairs([("a".to_owned(), rec)]).unwrap();
        assert_eq!(ctx.get("a").unwrap().to_string(), "{}");
    }
    for bad in [json!([1]), json!("x"), json!(3)] {
        assert_eq!(
            args_record(Some(&bad), None, &Reads::All).err().as_deref(),
            Some("the call's arguments are not a JSON object")
        );
    }
}

#[test]
fn a_record_shape_drops_undeclared_attributes() {
    let shape = Shape::Record(
        [
            ("channel".to_owned(), (Shape::String, false)),
            (
                "opts".to_owned(),
                (
                    Shape::Record([("deep".to_owned(), (Shape::Bool, false))].into()),
                    false,
                ),
            ),
        ]
        .into(),
    );
    let v = eval(
        json!({"channel": "public", "extra": 1, "opts": {"deep": true, "more": 2}}),
        Some(&shape),
    );
    assert_eq!(
        v.to_string(),
        "{\"channel\": \"public\", \"opts\": {\"deep\": true}}"
    );
}

#[test]
fn shipped_schema_context_shape() {
    let (frag, _) =
        cedar_policy::SchemaFragment::from_cedarschema_str(crate::SHIPPED_SCHEMA).unwrap();
    let json = frag.to_json_value().unwrap();
    for action in ["call_tool", "read_resource", "get_prompt"] {
        let Some(Shape::Record(ctx)) = Shape::context_of(&json, action) else {
            panic!("{action}: context is a record");
        };
        let mut keys: Vec<_> = ctx.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["approval", "args", "session"]);
        let Some((Shape::Record(args), true)) = ctx.get("args") else {
            panic!("args is a record");
        };
        assert_eq!(args.get("channel"), Some(&(Shape::String, false)));
        assert_eq!(args.get("cpus"), Some(&(Shape::Long, false)));
        assert_eq!(args.get("recursive"), Some(&(Shape::Bool, false)));
        assert_eq!(
            args.get("ids"),
            Some(&(Shape::Set(Box::new(Shape::String)), false))
        );
        assert_eq!(
            ctx.get("session").map(|(_, required)| *required),
            Some(true)
        );
        assert!(!args.contains_key("chanel"));
    }
    assert_eq!(Shape::context_of(&json, "no_such_action"), None);
}

#[test]
fn decimals_in_a_schema_are_recognised() {
    let schema = r#"
        entity A; entity R;
        type Money = decimal;
        action act appliesTo { principal: A, resource: R,
            context: { args: { price?: Money, tags?: Set<decimal> } } };
    "#;
    let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(schema).unwrap();
    let json = frag.to_json_value().unwrap();
    let ctx = Shape::context_of(&json, "act").unwrap();
    let args = ctx.attr("args").unwrap();
    assert_eq!(args.attr("price"), Some(&Shape::Decimal));
    assert_eq!(
        args.attr("tags"),
        Some(&Shape::Set(Box::new(Shape::Decimal)))
    );
}

#[test]
fn decimal_text_bounds() {
    assert_eq!(decimal_text(3.0).as_deref(), Some("3.0"));
    assert_eq!(decimal_text(-0.5).as_deref(), Some("-0.5"));
    assert_eq!(decimal_text(f64::NAN), None);
    assert_eq!(decimal_text(f64::INFINITY), None);
    assert_eq!(
        decimal_text(922_337_203_685_476.5).as_deref(),
        Some("922337203685476.5")
    );
    assert_eq!(decimal_text(1e-5), None);
}

fn shipped_args() -> Shape {
    let (frag, _) =
        cedar_policy::SchemaFragment::from_cedarschema_str(crate::SHIPPED_SCHEMA).unwrap();
    let ctx = Shape::context_of(&frag.to_json_value().unwrap(), "call_tool").unwrap();
    ctx.attr("args").unwrap().clone()
}

#[test]
fn declared_arguments_must_have_their_type() {
    let shape = shipped_args();
    let err = |v: serde_json::Value| args_record(Some(&v), Some(&shape), &Reads::All).err();
    assert_eq!(
        err(json!({"cpus": "64"})).as_deref(),
        Some("argument cpus must be a Long (integer), not a string")
    );
    assert_eq!(
        err(json!({"cpus": 1.5})).as_deref(),
        Some("argument cpus must be a Long (integer), not a fractional number")
    );
    assert_eq!(
        err(json!({"channel": ["public"]})).as_deref(),
        Some("argument channel must be a String, not an array")
    );
    assert_eq!(
        err(json!({"recursive": "true"})).as_deref(),
        Some("argument recursive must be a Bool, not a string")
    );
    assert_eq!(
        err(json!({"ids": ["a", 1]})).as_deref(),
        Some("argument ids[] must be a String, not an integer")
    );
    assert_eq!(
        err(json!({"cpus": 4.0, "ids": ["a", null], "undeclared": [1, {}]})),
        None
    );
    let ok = args_record(
        Some(&json!({"cpus": 4.0, "channel": null})),
        Some(&shape),
        &Reads::All,
    )
    .unwrap();
    let ctx = Context::from_pairs([("a".to_owned(), ok)]).unwrap();
    assert_eq!(ctx.get("a").unwrap().to_string(), "{\"cpus\": 4}");
}

#[test]
fn required_attributes_entities_and_extensions() {
    let schema = r#"
        entity A; entity R;
        action act appliesTo { principal: A, resource: R,
            context: { args: { need: String, who?: A, ip?: ipaddr, nested?: { inner: Long } } } };
    "#;
    let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(schema).unwrap();
    let ctx = Shape::context_of(&frag.to_json_value().unwrap(), "act").unwrap();
    let args = ctx.attr("args").unwrap();
    let err = |v: serde_json::Value| args_record(Some(&v), Some(args), &Reads::All).err();
    assert_eq!(
        err(json!({})).as_deref(),
        Some("argument need is required by the schema")
    );
    assert_eq!(
        err(json!({"need": null})).as_deref(),
        Some("argument need is required by the schema")
    );
    assert_eq!(
        err(json!({"need": "x", "who": "A::\"root\""})).as_deref(),
        Some("argument who must be an entity (never settable from arguments), not a string")
    );
    assert_eq!(
        err(json!({"need": "x", "nested": {}})).as_deref(),
        Some("argument nested.inner is required by the schema")
    );
    assert_eq!(
        err(json!({"need": "x", "ip": 3})).as_deref(),
        Some("argument ip must be ipaddr, not an integer")
    );
    let rec = args_record(
        Some(&json!({"need": "x", "ip": "10.0.0.1"})),
        Some(args),
        &Reads::All,
    )
    .unwrap();
    let ctx = Context::from_pairs([("a".to_owned(), rec)]).unwrap();
    assert_eq!(
        ctx.get("a").unwrap().to_string(),
        "{\"ip\": ip(\"10.0.0.1\"), \"need\": \"x\"}"
    );
}

#[test]
fn only_what_is_read_is_converted_and_checked() {
    let shape = shipped_args();
    let p = cedar_policy::Policy::parse(
        None,
        "permit(principal, action, resource) when { context.args has cpus && context.args.cpus < 4 };",
    )
    .unwrap();
    let reads = Reads::of([&p]);
    let args_reads = reads.get("args").unwrap();
    // `channel` has the wrong type but nothing reads it.
    let v = json!({"cpus": 2, "channel": 5, "title": "t"});
    let rec = args_record(Some(&v), Some(&shape), args_reads).unwrap();
    let ctx = Context::from_pairs([("a".to_owned(), rec)]).unwrap();
    assert_eq!(ctx.get("a").unwrap().to_string(), "{\"cpus\": 2}");
    let bad = json!({"cpus": "2"});
    assert!(args_record(Some(&bad), Some(&shape), args_reads).is_err());
}
