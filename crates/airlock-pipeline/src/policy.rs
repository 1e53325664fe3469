//! The policy stage: what Cedar says about one request from the agent.
//!
//! Pure apart from the policy engine: it turns a parsed frame into a [`Judgement`] (forward,
//! hold or refuse) and the audit record that goes with it. Writing the record and moving bytes
//! is the caller's job, so that a batch of frames shares one durable commit. The session's
//! information-flow labels go into every decision (`context.session.labels`).

use airlock_audit::{AirlockReason, NewRecord, Reason};
use airlock_policy::{Action, CallRequest, Decision, PolicyEngine, PolicyRef};
use airlock_protocol::{digest_json, Frame, Id, INVALID_PARAMS};
use serde_json::{json, Map, Value};

use crate::audit::base_record;
use crate::calls::Expect;
use crate::codes;
use crate::route::{route_request, ActKind, RequestRoute};
use crate::Identity;

/// The verdict on one request.
pub enum Judgement {
    /// Forward the original bytes upstream.
    Forward {
        expect: Expect,
        record: Option<NewRecord>,
    },
    /// Only a human's approval stands in the way: hold the call.
    Hold(Box<HoldRequest>),
    /// Answer the agent with an error; nothing reaches the server.
    Refuse {
        code: i32,
        message: String,
        data: Option<Value>,
        record: Option<NewRecord>,
    },
}

/// A call policy holds for a human, with what the approval request needs.
pub struct HoldRequest {
    pub kind: ActKind,
    pub target: String,
    /// The call's arguments (an object; `{}` when absent).
    pub args: Value,
    /// The `@approval` forbids that held it.
    pub reasons: Vec<PolicyRef>,
    /// The call's audit record, decision `hold`.
    pub record: NewRecord,
}

/// Judges one request frame from the agent. `granted`: a human approved this exact action.
/// `tasks/*` requests are judged by the caller (they need the session's tasks).
#[allow(clippy::too_many_arguments)]
pub fn judge_request(
    policy: &PolicyEngine,
    who: &Identity,
    allow_methods: &[String],
    labels: &[String],
    frame: &Frame,
    id: &Id,
    method: &str,
    granted: bool,
) -> Judgement {
    match route_request(method, allow_methods) {
        RequestRoute::Act(kind) => judge_act(policy, who, labels, frame, id, method, kind, granted),
        RequestRoute::Task(_) | RequestRoute::TaskList => Judgement::Refuse {
            code: codes::DENIED,
            message: format!("Airlock refused `{method}`: tasks are judged with the session"),
            data: None,
            record: None,
        },
        RequestRoute::List(kind) => Judgement::Forward {
            expect: Expect::List(kind),
            record: None,
        },
        RequestRoute::Complete => judge_complete(policy, who, frame),
        RequestRoute::Pass => Judgement::Forward {
            expect: Expect::Plain,
            record: None,
        },
        RequestRoute::Allowed => Judgement::Forward {
            expect: Expect::Plain,
            record: Some(NewRecord {
                decision: Some(airlock_audit::Decision::Allow),
                reasons: vec![Reason::Config("gateway.allow_methods".into()).to_string()],
                ..base_record(who, policy, method, None, Some(id))
            }),
        },
        RequestRoute::Unknown => {
            let message = format!(
                "Airlock refused method `{method}`: it is not a method Airlock can judge \
                 (list it in [gateway] allow_methods to let it through)"
            );
            Judgement::Refuse {
                code: codes::METHOD_NOT_ALLOWED,
                message,
                data: None,
                record: Some(NewRecord {
                    decision: Some(airlock_audit::Decision::Deny),
                    reasons: vec![Reason::Airlock(AirlockReason::UnknownMethod).to_string()],
                    ..base_record(who, policy, method, None, Some(id))
                }),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn judge_act(
    policy: &PolicyEngine,
    who: &Identity,
    labels: &[String],
    frame: &Frame,
    id: &Id,
    method: &str,
    kind: ActKind,
    granted: bool,
) -> Judgement {
    let params = frame.params();
    let target = params
        .and_then(|p| p.get(kind.target_key()))
        .and_then(Value::as_str);
    let args = match (kind.args_key(), params) {
        (Some(key), Some(p)) => p.get(key),
        _ => None,
    };
    let malformed = |why: String| {
        let mut record = base_record(who, policy, method, target, Some(id));
        record.decision = Some(airlock_audit::Decision::Deny);
        record.reasons = vec![Reason::Airlock(AirlockReason::MalformedParams).to_string()];
        Judgement::Refuse {
            code: INVALID_PARAMS,
            message: format!("Airlock refused `{method}`: {why}"),
            data: None,
            record: Some(record),
        }
    };
    if !matches!(params, Some(Value::Object(_))) {
        return malformed("params must be an object".into());
    }
    let Some(target) = target else {
        return malformed(format!("params.{} must be a string", kind.target_key()));
    };
    if let Some(a) = args {
        if !a.is_object() {
            return malformed(format!(
                "params.{} must be an object",
                kind.args_key().unwrap_or("arguments")
            ));
        }
    }
    let empty = Value::Object(Map::new());
    let args_value = args.unwrap_or(&empty);
    let decision = policy.decide(&CallRequest {
        agent: &who.agent,
        session: &who.session,
        action: kind.action(),
        server: &who.server,
        name: target,
        args: Some(args_value),
        approval_granted: granted,
        labels,
    });
    let mut record = base_record(who, policy, method, Some(target), Some(id));
    record.args_digest = Some(digest_json(args_value));
    record.args_redacted = Some(airlock_audit::redact(args_value));
    match decision {
        Decision::Allow { reasons } => {
            record.decision = Some(airlock_audit::Decision::Allow);
            record.reasons = reasons.iter().map(|r| r.id.clone()).collect();
            Judgement::Forward {
                expect: Expect::Act {
                    kind,
                    target: target.to_string(),
                },
                record: Some(record),
            }
        }
        Decision::Deny { reasons, errors } => {
            // The engine reports the default deny and an unknown agent as texts too; only
            // the rest are evaluation errors (fail closed).
            let errors: Vec<String> = errors
                .into_iter()
                .filter(|e| e != airlock_policy::NO_PERMIT && e != airlock_policy::UNKNOWN_AGENT)
                .collect();
            let message = deny_message(who, kind.action(), target, &reasons, &errors);
            record.decision = Some(airlock_audit::Decision::Deny);
            record.reasons = reasons.iter().map(|r| r.id.clone()).collect();
            if record.reasons.is_empty() {
                record.reasons.push(if errors.is_empty() {
                    Reason::Airlock(AirlockReason::DefaultDeny).to_string()
                } else {
                    Reason::Airlock(AirlockReason::EvaluationError).to_string()
                });
            }
            if !errors.is_empty() {
                record.detail = Some(json!({ "evaluation_errors": errors }));
            }
            Judgement::Refuse {
                code: codes::DENIED,
                message,
                data: Some(deny_data(&reasons, &errors)),
                record: Some(record),
            }
        }
        Decision::NeedsApproval { reasons } => {
            // Held for a human: the gateway stores the request and waits (see `hold`).
            let why: Vec<String> = reasons
                .iter()
                .map(|r| r.approval.clone().unwrap_or_else(|| r.id.clone()))
                .collect();
            record.decision = Some(airlock_audit::Decision::Hold);
            record.reasons = reasons.iter().map(|r| r.id.clone()).collect();
            record.detail = Some(json!({ "needs_approval": why }));
            Judgement::Hold(Box::new(HoldRequest {
                kind,
                target: target.to_string(),
                args: args_value.clone(),
                reasons,
                record,
            }))
        }
    }
}

/// `completion/complete` names a prompt or a resource; it may only be asked about one the agent
/// could use.
fn judge_complete(policy: &PolicyEngine, who: &Identity, frame: &Frame) -> Judgement {
    let reference = frame.params().and_then(|p| p.get("ref"));
    let kind = reference
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str);
    let target = match kind {
        Some("ref/prompt") => reference
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            .map(|n| (Action::GetPrompt, n)),
        Some("ref/resource") => reference
            .and_then(|r| r.get("uri"))
            .and_then(Value::as_str)
            .map(|u| (Action::ReadResource, u)),
        _ => None,
    };
    match target {
        Some((action, name)) if policy.visible(&who.agent, action, &who.server, name) => {
            Judgement::Forward {
                expect: Expect::Plain,
                record: None,
            }
        }
        Some((action, name)) => Judgement::Refuse {
            code: codes::DENIED,
            message: format!(
                "denied by Airlock: agent {} may not use {} {}",
                who.agent,
                action.as_str(),
                name
            ),
            data: None,
            record: None,
        },
        None => Judgement::Refuse {
            code: INVALID_PARAMS,
            message: "Airlock refused `completion/complete`: params.ref must name a prompt \
                      (ref/prompt + name) or a resource (ref/resource + uri)"
                .into(),
            data: None,
            record: None,
        },
    }
}

fn deny_message(
    who: &Identity,
    action: Action,
    target: &str,
    reasons: &[PolicyRef],
    errors: &[String],
) -> String {
    if !errors.is_empty() {
        return format!(
            "denied by Airlock: a policy could not be evaluated, so the call is refused \
             (fail closed): {}",
            errors.join("; ")
        );
    }
    if reasons.is_empty() {
        return format!(
            "denied by Airlock: no policy permits agent {} to {} {}/{}",
            who.agent,
            action.as_str(),
            who.server,
            target
        );
    }
    let parts: Vec<String> = reasons
        .iter()
        .map(|r| match &r.reason {
            Some(reason) => format!("policy `{}`: {}", r.id, reason),
            None => format!("policy `{}`", r.id),
        })
        .collect();
    format!("denied by Airlock: {}", parts.join("; "))
}

fn deny_data(reasons: &[PolicyRef], errors: &[String]) -> Value {
    let policies: Vec<Value> = reasons
        .iter()
        .map(|r| json!({ "id": r.id, "reason": r.reason, "location": r.location }))
        .collect();
    json!({ "airlock": { "decision": "deny", "policies": policies, "errors": errors } })
}
