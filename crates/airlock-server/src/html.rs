//! The page's building blocks: the layout, the folded JSON view of arguments, times. Every
//! value goes through maud, which escapes it: arguments are written by the agent (attacker
//! controlled) and must only ever show as text.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

/// Strings longer than this (or with a line break) are folded behind a `<details>`.
const FOLD_CHARS: usize = 80;
/// Characters of a folded string shown in its summary.
const SUMMARY_CHARS: usize = 48;

/// A whole page. `who` is the logged-in human (with the logout form's CSRF token);
/// `live` is the fragment URL the script re-fetches on every change.
pub(crate) fn page(
    title: &str,
    who: Option<(&str, &str)>,
    live: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · Airlock" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.bar {
                    a.brand href="/" { "Airlock" }
                    @if let Some((human, csrf)) = who {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span.who { (human) }
                            button.btn.small type="submit" { "Log out" }
                        }
                    }
                }
                main #page data-live=[live] {
                    (body)
                }
            }
        }
    }
}

/// A JSON value as an indented, escaped tree; long strings folded.
pub(crate) fn json(v: &Value) -> Markup {
    html! { div.json { (node(v)) } }
}

fn node(v: &Value) -> Markup {
    match v {
        Value::Object(map) if map.is_empty() => html! { span.jp { "{}" } },
        Value::Array(items) if items.is_empty() => html! { span.jp { "[]" } },
        Value::Object(map) => html! {
            span.jp { "{" }
            div.jin {
                @for (i, (k, v)) in map.iter().enumerate() {
                    div.jrow {
                        span.jk { (quoted(k)) } span.jp { ": " } (node(v))
                        @if i + 1 < map.len() { span.jp { "," } }
                    }
                }
            }
            span.jp { "}" }
        },
        Value::Array(items) => html! {
            span.jp { "[" }
            div.jin {
                @for (i, v) in items.iter().enumerate() {
                    div.jrow {
                        (node(v))
                        @if i + 1 < items.len() { span.jp { "," } }
                    }
                }
            }
            span.jp { "]" }
        },
        Value::String(s) if s.chars().count() > FOLD_CHARS || s.contains('\n') => {
            let head: String = s.chars().take(SUMMARY_CHARS).collect();
            let head = head.replace('\n', "⏎");
            html! {
                details.jfold {
                    summary {
                        span.js { (quoted(&head)) "…" }
                        span.jmeta { " " (s.chars().count()) " characters" }
                    }
                    pre.jlong { (s) }
                }
            }
        }
        Value::String(s) => html! { span.js { (quoted(s)) } },
        Value::Number(n) => html! { span.jn { (n.to_string()) } },
        Value::Bool(b) => html! { span.jn { (b.to_string()) } },
        Value::Null => html! { span.jn { "null" } },
    }
}

/// A string as JSON writes it (quotes and escapes), before HTML escaping.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `2026-12-01 18:40:12 UTC`.
pub(crate) fn time(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// "in 14 min", "3 min ago", "now".
pub(crate) fn relative(ns: i64, now_ns: i64) -> String {
    let secs = (ns - now_ns) / 1_000_000_000;
    let (n, unit) = match secs.unsigned_abs() {
        s if s < 60 => {
            return if secs >= 0 {
                "in under a minute".into()
            } else {
                "just now".into()
            }
        }
        s if s < 3600 => (s / 60, "min"),
        s if s < 86_400 => (s / 3600, "h"),
        s => (s / 86_400, "d"),
    };
    if secs >= 0 {
        format!("in {n} {unit}")
    } else {
        format!("{n} {unit} ago")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn markup_in_arguments_is_text() {
        let v = json!({"body": "<script>alert(1)</script>", "<b>k</b>": "x\"y"});
        let out = json(&v).into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(!out.contains("<b>"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{out}"
        );
        assert!(out.contains("&quot;x\\&quot;y&quot;"), "{out}");
    }

    #[test]
    fn long_values_are_folded_and_short_ones_are_not() {
        let long = "a".repeat(200);
        let out = json(&json!({"short": "hi", "long": long, "lines": "a\nb"})).into_string();
        assert_eq!(out.matches("<details").count(), 2, "{out}");
        assert!(out.contains("200 characters"));
        assert!(
            out.contains(&"a".repeat(200)),
            "the full value is there when unfolded"
        );
        assert!(out.contains("&quot;hi&quot;"));
    }

    #[test]
    fn times_read_well() {
        assert_eq!(time(1_700_000_000_000_000_000), "2023-11-14 22:13:20 UTC");
        let now = 1_000 * 1_000_000_000;
        assert_eq!(relative(now + 14 * 60 * 1_000_000_000, now), "in 14 min");
        assert_eq!(relative(now - 3 * 3600 * 1_000_000_000, now), "3 h ago");
        assert_eq!(relative(now + 5_000_000_000, now), "in under a minute");
    }
}
