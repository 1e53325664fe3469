#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Each value and the text trails hold for it, written out here (not taken from `as_str`):
/// the text is a file format.
/// Every kind with the text earlier builds wrote (also the store's hash test's table).
pub(crate) const KINDS: &[(RecordKind, &str)] = &[
    (RecordKind::Call, "call"),
    (RecordKind::Result, "result"),
    (RecordKind::ConfigLoad, "config_load"),
    (RecordKind::ConfigReload, "config_reload"),
    (RecordKind::ConfigReloadFailed, "config_reload_failed"),
    (RecordKind::Approval, "approval"),
    (RecordKind::Kill, "kill"),
    (RecordKind::Resume, "resume"),
    (RecordKind::Breaker, "breaker"),
    (RecordKind::Egress, "egress"),
    (RecordKind::UpstreamExit, "upstream_exit"),
    (RecordKind::Flow, "flow"),
    (RecordKind::Exec, "exec"),
    (RecordKind::SandboxBreach, "sandbox_breach"),
    (RecordKind::Notification, "notification"),
    (RecordKind::ServerRequest, "server_request"),
    (RecordKind::Agent, "agent"),
];

pub(crate) const DECISIONS: &[(Decision, &str)] = &[
    (Decision::Allow, "allow"),
    (Decision::Deny, "deny"),
    (Decision::Hold, "hold"),
    (Decision::Approve, "approve"),
];

const STATUSES: &[(ResultStatus, &str)] = &[
    (ResultStatus::Ok, "ok"),
    (ResultStatus::Error, "error"),
    (ResultStatus::IsError, "is_error"),
    (ResultStatus::Cancelled, "cancelled"),
    (ResultStatus::UpstreamDied, "upstream_died"),
    (ResultStatus::Timeout, "timeout"),
    (ResultStatus::Killed, "killed"),
    (ResultStatus::Withheld, "withheld"),
    (ResultStatus::ApprovalDenied, "approval_denied"),
    (ResultStatus::ApprovalExpired, "approval_expired"),
    (ResultStatus::ApprovalError, "approval_error"),
    (ResultStatus::SandboxError, "sandbox_error"),
    (ResultStatus::Pending, "pending"),
    (ResultStatus::Approved, "approved"),
    (ResultStatus::Denied, "denied"),
    (ResultStatus::Expired, "expired"),
    (ResultStatus::Withdrawn, "withdrawn"),
    (ResultStatus::Used, "used"),
    (ResultStatus::Refused, "refused"),
    (ResultStatus::Open, "open"),
    (ResultStatus::Closed, "closed"),
];

const AIRLOCK_REASONS: &[(AirlockReason, &str)] = &[
    (AirlockReason::DefaultDeny, "airlock:default-deny"),
    (AirlockReason::EvaluationError, "airlock:evaluation-error"),
    (AirlockReason::MalformedParams, "airlock:malformed-params"),
    (AirlockReason::UnknownMethod, "airlock:unknown-method"),
    (
        AirlockReason::DeniedAfterApproval,
        "airlock:denied-after-approval",
    ),
    (AirlockReason::NoApprovalStore, "airlock:no-approval-store"),
    (
        AirlockReason::BadApprovalPolicy,
        "airlock:bad-approval-policy",
    ),
    (
        AirlockReason::ApprovalStoreError,
        "airlock:approval-store-error",
    ),
    (
        AirlockReason::BreakerStoreError,
        "airlock:breaker-store-error",
    ),
    (
        AirlockReason::CancelNotInFlight,
        "airlock:cancel-not-in-flight",
    ),
    (AirlockReason::OwnTask, "airlock:own-task"),
    (AirlockReason::OwnTasks, "airlock:own-tasks"),
    (AirlockReason::UnknownTask, "airlock:unknown-task"),
    (
        AirlockReason::AnswerToServerRequest,
        "airlock:answer-to-server-request",
    ),
    (
        AirlockReason::NoSuchServerRequest,
        "airlock:no-such-server-request",
    ),
    (AirlockReason::Stopped, "airlock:stopped"),
];

/// Every value is in the table, once; each prints, serialises and reads back as its text.
macro_rules! check_named {
    ($ty:ty, $table:expr) => {{
        let table: &[($ty, &str)] = $table;
        assert_eq!(
            table.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            <$ty>::ALL.to_vec(),
            "the table lists every value, in order"
        );
        for &(v, text) in table {
            assert_eq!(v.as_str(), text);
            assert_eq!(v.to_string(), text);
            assert_eq!(<$ty>::from_name(text), Some(v));
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<$ty>(&json).unwrap(), v);
        }
        assert_eq!(<$ty>::from_name("no-such-name"), None);
        assert_eq!(<$ty>::from_name(""), None);
        assert!(serde_json::from_str::<$ty>("\"no-such-name\"").is_err());
    }};
}

#[test]
fn record_kinds_round_trip_as_their_legacy_text() {
    check_named!(RecordKind, KINDS);
}

#[test]
fn decisions_round_trip_as_their_legacy_text() {
    check_named!(Decision, DECISIONS);
}

#[test]
fn statuses_round_trip_as_their_legacy_text() {
    check_named!(ResultStatus, STATUSES);
}

#[test]
fn airlock_reasons_round_trip_as_their_legacy_text() {
    let bare: Vec<(AirlockReason, &str)> = AIRLOCK_REASONS
        .iter()
        .map(|(r, t)| (*r, t.strip_prefix("airlock:").unwrap()))
        .collect();
    check_named!(AirlockReason, &bare);
    for &(r, text) in AIRLOCK_REASONS {
        assert_eq!(Reason::Airlock(r).to_string(), text);
        assert_eq!(Reason::parse(text), Reason::Airlock(r));
        assert_eq!(String::from(Reason::from(r)), text);
    }
}

/// The rule kinds followed when they were free text: short enough to index, plain enough to
/// never need escaping in a report.
#[test]
fn every_kind_is_plain_lowercase_text() {
    for k in RecordKind::ALL {
        let b = k.as_str().as_bytes();
        assert!(b.len() <= 64 && b[0].is_ascii_lowercase(), "{k}");
        assert!(
            b.iter()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')),
            "{k}"
        );
    }
}

#[test]
fn reasons_print_as_their_legacy_text_and_read_back() {
    let cases = [
        (
            Reason::Policy("no-recursive-acl-changes".into()),
            "no-recursive-acl-changes",
        ),
        (Reason::Kill(12), "kill:12"),
        (Reason::Kill(-3), "kill:-3"),
        (Reason::Approval("a-7f3c".into()), "approval:a-7f3c"),
        (Reason::Breaker("acl-changes".into()), "breaker:acl-changes"),
        (Reason::Breaker("loop.fanout".into()), "breaker:loop.fanout"),
        (
            Reason::Config("gateway.allow_methods".into()),
            "config:gateway.allow_methods",
        ),
        (
            Reason::Airlock(AirlockReason::DefaultDeny),
            "airlock:default-deny",
        ),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
        assert_eq!(String::from(reason.clone()), text);
        assert_eq!(Reason::parse(text), reason);
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(json, serde_json::to_string(text).unwrap());
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
    }
    assert_eq!(
        Reason::Text("runaway bot".into()).to_string(),
        "runaway bot"
    );
}

#[test]
fn reading_reasons_is_lossless_for_any_text() {
    for text in [
        "",
        "kill:",
        "kill:abc",
        "kill:-0",
        "kill:007",
        "airlock:",
        "airlock:something-newer",
        "breaker: acl-changes",
        "approval:",
        "dial failed: connection refused",
        "allowed by api.github.com:443",
        "é:ü",
    ] {
        assert_eq!(Reason::parse(text).to_string(), text, "{text:?}");
    }
    assert_eq!(
        Reason::parse("airlock:something-newer"),
        Reason::Text("airlock:something-newer".into())
    );
    assert_eq!(Reason::parse("kill:007"), Reason::Text("kill:007".into()));
}
