#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use crate::engine::tests::model;
use crate::{PolicyEngine, PolicyError, PolicySources, SHIPPED_SCHEMA};

const OK: &str = "permit(principal, action, resource);\n";

fn load_err(files: &[(&str, &str)]) -> PolicyError {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    PolicyEngine::from_texts(SHIPPED_SCHEMA, &files, &model()).unwrap_err()
}

fn pos(e: &PolicyError) -> (&str, usize, usize) {
    (e.file.as_str(), e.line, e.col)
}

#[test]
fn a_syntax_error_names_its_file_line_and_column() {
    let second =
        "// second\npermit(principal, action, resource);\n\npermit(principal, action resource);\n";
    let e = load_err(&[("a.cedar", OK), ("b.cedar", second)]);
    // `resource` where a `,` or `)` was expected: line 4, column 26.
    assert_eq!(pos(&e), ("b.cedar", 4, 26), "{e}");
    assert!(
        e.to_string()
            .starts_with("b.cedar:4:26: unexpected token `resource`"),
        "{e}"
    );
}

#[test]
fn a_validation_error_points_at_the_expression_in_the_second_file() {
    let second = "permit(principal, action, resource);\n@id(\"typo\")\npermit(principal, action, resource)\n  when { context.args has channel && context.args.chanel == \"x\" };\n";
    let e = load_err(&[("a.cedar", OK), ("b.cedar", second)]);
    assert_eq!(pos(&e), ("b.cedar", 4, 38), "{e}");
    assert!(e.message.contains("chanel"), "{e}");
}

#[test]
fn strict_validation_refuses_unguarded_reads_and_unknown_types() {
    let unguarded = "permit(principal, action, resource)\nwhen { context.args.channel == \"x\" };";
    let e = load_err(&[("u.cedar", unguarded)]);
    assert_eq!(pos(&e), ("u.cedar", 2, 8), "{e}");
    assert!(e.message.contains("channel"), "{e}");

    let e = load_err(&[(
        "t.cedar",
        "permit(principal == Usr::\"x\", action, resource);",
    )]);
    assert_eq!(pos(&e), ("t.cedar", 1, 21), "{e}");
    assert!(e.message.contains("Usr"), "{e}");

    // Strict mode: comparing a Long to a String is an error, not `false`.
    let e = load_err(&[(
        "s.cedar",
        "permit(principal, action, resource) when { context.args has cpus && context.args.cpus == \"8\" };",
    )]);
    assert_eq!(e.file, "s.cedar");
    assert_eq!(e.line, 1);
}

#[test]
fn a_schema_error_names_the_schema_position() {
    let schema = "entity Agent;\n\nentity Tool in [Server;\n";
    let err = PolicyEngine::from_texts(schema, &[], &model()).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("<schema>", 3), "{err}");
    assert!(err.message.starts_with("schema: "), "{err}");

    // A schema that parses but does not fit the entity model.
    let bare = "entity Agent; entity Tool; action call_tool appliesTo { principal: Agent, resource: Tool };";
    let err = PolicyEngine::from_texts(bare, &[], &model()).unwrap_err();
    assert_eq!(err.file, "<entity model>", "{err}");
}

#[test]
fn duplicate_ids_and_templates_are_refused() {
    let a = "@id(\"x\") permit(principal, action, resource);";
    let b = "\n\n@id(\"x\") forbid(principal, action, resource);";
    let e = load_err(&[("a.cedar", a), ("b.cedar", b)]);
    assert_eq!(e.to_string(), "b.cedar:3:1: duplicate policy id \"x\"");

    let e = load_err(&[(
        "t.cedar",
        "permit(principal == ?principal, action, resource);",
    )]);
    assert_eq!(e.file, "t.cedar");
    assert!(e.message.contains("templates"), "{e}");

    let e = load_err(&[("e.cedar", "@id(\"\") permit(principal, action, resource);")]);
    assert_eq!(e.to_string(), "e.cedar:1:1: @id may not be empty");
}

/// Finding behind the schema's closed `Args` record: cedar-policy 4.14 only
/// takes open records behind its experimental `partial-validate` feature.
#[test]
fn open_records_need_an_experimental_feature() {
    let json = serde_json::json!({"": {"entityTypes": {}, "actions": {}, "commonTypes": {
        "Args": {"type": "Record", "attributes": {}, "additionalAttributes": true}}}});
    let err = cedar_policy::Schema::from_json_value(json).unwrap_err();
    let text = crate::error::describe(&err);
    let source = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        format!("{text} {source}").contains("unsupported feature"),
        "{text} / {source}"
    );
}

#[test]
fn load_reads_directories_sorted_and_uses_the_shipped_schema() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    fs::create_dir(&pol).unwrap();
    fs::write(
        pol.join("b.cedar"),
        "@id(\"b\") forbid(principal, action, resource == Tool::\"corp/x\");",
    )
    .unwrap();
    fs::write(
        pol.join("a.cedar"),
        "@id(\"a\") permit(principal, action, resource);",
    )
    .unwrap();
    fs::write(pol.join("notes.txt"), "not a policy").unwrap();
    let extra = dir.path().join("extra.cedar");
    fs::write(&extra, "@id(\"c\") permit(principal, action, resource);").unwrap();

    let src = PolicySources {
        schema: None,
        files: vec![pol.clone(), extra.clone()],
    };
    let e = PolicyEngine::load(&src, &model()).unwrap();
    let got: Vec<(String, String)> = e
        .policies()
        .into_iter()
        .map(|p| (p.id, p.location))
        .collect();
    let at = |p: &std::path::Path| format!("{}:1:1", p.display());
    assert_eq!(
        got,
        [
            ("a".to_owned(), at(&pol.join("a.cedar"))),
            ("b".to_owned(), at(&pol.join("b.cedar"))),
            ("c".to_owned(), at(&extra)),
        ]
    );
    // Same texts through `from_texts` give the same digest.
    let texts: Vec<(String, String)> = [pol.join("a.cedar"), pol.join("b.cedar"), extra]
        .iter()
        .map(|p| (p.display().to_string(), fs::read_to_string(p).unwrap()))
        .collect();
    let same = PolicyEngine::from_texts(SHIPPED_SCHEMA, &texts, &model()).unwrap();
    assert_eq!(e.digest(), same.digest());

    // A schema file of one's own, with an error in it.
    let schema = dir.path().join("my.cedarschema");
    fs::write(&schema, "entity A;\nentity B in [C];\n").unwrap();
    let err = PolicyEngine::load(
        &PolicySources {
            schema: Some(schema.clone()),
            files: vec![],
        },
        &model(),
    )
    .unwrap_err();
    assert_eq!(
        (err.file.clone(), err.line),
        (schema.display().to_string(), 2),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_error_without_a_position() {
    let missing = std::path::PathBuf::from("/nonexistent/airlock/p.cedar");
    let err = PolicyEngine::load(
        &PolicySources {
            schema: None,
            files: vec![missing],
        },
        &model(),
    )
    .unwrap_err();
    assert_eq!((err.line, err.col), (0, 0));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/airlock/p.cedar: cannot read: "),
        "{err}"
    );
}

#[test]
fn policy_starts_skip_strings_and_comments() {
    let text = "// a; comment\n@id(\"x;y\") permit(principal, action, resource == Tool::\"a;\\\"b\");\n  forbid(principal, action, resource);";
    let starts = crate::load::policy_starts(text);
    assert_eq!(starts.len(), 2);
    assert!(text[starts[0]..].starts_with("@id"));
    assert!(text[starts[1]..].starts_with("forbid"));
    assert_eq!(crate::error::line_col(text, starts[1]), (3, 3));
    assert_eq!(
        crate::error::line_col("é\nàb", 5),
        (2, 2),
        "columns count characters"
    );
    assert_eq!(
        crate::error::line_col("é\nàb", 4),
        (2, 1),
        "inside a character: clamped"
    );
}

/// The examples in `policies/README.md` load against the shipped schema.
#[test]
fn readme_examples_validate() {
    let readme = include_str!("../../../policies/README.md");
    let blocks: Vec<(String, String)> = readme
        .split("```cedar\n")
        .skip(1)
        .enumerate()
        .map(|(i, rest)| {
            (
                format!("README example {i}"),
                rest.split("```").next().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(blocks.len(), 6);
    let e = PolicyEngine::from_texts(SHIPPED_SCHEMA, &blocks, &model()).unwrap();
    let ids: Vec<String> = e.policies().into_iter().map(|p| p.id).collect();
    assert_eq!(
        ids,
        [
            "read-forum",
            "writers-on-corp",
            "no-public-posts",
            "public-post-approval",
            "public-posts",
            "no-confidential-in-public"
        ]
    );
}
