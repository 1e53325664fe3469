//! A pipeline on a temporary store, driven by frames in memory: no processes, no transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_approval::{ApprovalStore, Verdict, Vote};
use airlock_audit::{AuditStore, AuditWriter, Durability, Query};
use airlock_policy::{AgentEntity, EntityModel, HumanEntity, PolicyEngine, SHIPPED_SCHEMA};
use serde_json::{json, Value};

use crate::pipeline::ControlParts;
use crate::store::{Counters, Stores};
use crate::{Identity, Line, Options, Output, Pipeline, PipelineParts, PolicyHandle, Rules};

/// Allows `echo`, `secret`, `post` (public posts held for a human) and reading resources.
pub(crate) const POLICY: &str = r#"
permit (principal == Agent::"bot", action == Action::"call_tool", resource in Server::"corp");
permit (principal == Agent::"bot", action == Action::"read_resource", resource in Server::"corp");
@id("public-post-needs-approval")
@approval("a public post needs a human sign-off")
forbid (principal, action == Action::"call_tool", resource == Tool::"corp/post")
when { context.args has channel && context.args.channel == "public" }
unless { context.approval.granted };
@id("no-leaks")
@reason("the session read confidential data")
forbid (principal, action == Action::"call_tool", resource == Tool::"corp/post")
when { context.session.labels.contains("confidential") };
forbid (principal, action == Action::"call_tool", resource == Tool::"corp/forbidden");
"#;

pub(crate) const CONFIG: &str = r#"
[policy]
files = ["p.cedar"]
[audit]
path = "audit.db"
[humans.alice]
[humans.bob]
[tasks.triage]
[agents.bot]
on_behalf_of = "alice"
task = "triage"
[servers.corp]
[flow.labels.confidential]
tools = ["corp/secret"]
resources = ["corp/file:///restricted/*"]
[breakers.deletes]
tools = ["corp/delete"]
max_calls = 1
window_secs = 3600
"#;

pub(crate) struct Kit {
    /// Kept for the test's life: dropping it removes the store.
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) db: PathBuf,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) requests: Counters,
    pub(crate) answers: Counters,
}

fn model() -> EntityModel {
    EntityModel {
        agents: vec![AgentEntity {
            id: "bot".into(),
            on_behalf_of: "alice".into(),
            task: "triage".into(),
            groups: vec![],
        }],
        humans: vec![
            HumanEntity {
                id: "alice".into(),
                groups: vec![],
            },
            HumanEntity {
                id: "bob".into(),
                groups: vec![],
            },
        ],
        tasks: vec!["triage".into()],
        servers: vec!["corp".into()],
    }
}

impl Kit {
    pub(crate) fn new() -> Kit {
        Kit::with(POLICY, Duration::from_secs(30))
    }

    pub(crate) fn with(policy: &str, call_timeout: Duration) -> Kit {
        Kit::build(policy, call_timeout, None)
    }

    /// A kit whose pipeline redacts the secrets `redactor` knows.
    pub(crate) fn redacting(redactor: airlock_broker::Redactor) -> Kit {
        Kit::build(POLICY, Duration::from_secs(30), Some(Arc::new(redactor)))
    }

    fn build(
        policy: &str,
        call_timeout: Duration,
        redactor: Option<Arc<airlock_broker::Redactor>>,
    ) -> Kit {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let config = airlock_config::parse(CONFIG, &dir.path().join("airlock.toml")).unwrap();
        let engine = PolicyEngine::from_texts(
            SHIPPED_SCHEMA,
            &[("p.cedar".into(), policy.into())],
            &model(),
        )
        .unwrap();
        let audit = Arc::new(AuditWriter::start(&db, Durability::Process).unwrap());
        let stores = Stores::start(&db, Durability::Process).unwrap();
        let pipeline = Arc::new(Pipeline::new(PipelineParts {
            options: Options {
                identity: Identity {
                    agent: "bot".into(),
                    on_behalf_of: "alice".into(),
                    task: "triage".into(),
                    session: "s1".into(),
                    server: "corp".into(),
                },
                max_frame_bytes: 1 << 20,
                call_timeout,
                redactor,
            },
            policy: PolicyHandle::new(Rules {
                engine: Arc::new(engine),
                allow_methods: vec![],
                breakers: airlock_control::BreakerSet::from_config(&config),
                flow: airlock_flow::FlowRules::from_config(&config),
            }),
            audit,
            control: Some(ControlParts {
                db: db.clone(),
                stores,
                labels: vec![],
            }),
        }));
        Kit {
            requests: Counters::new(&db, Durability::Process),
            answers: Counters::new(&db, Durability::Process),
            _dir: dir,
            db,
            pipeline,
        }
    }

    /// Frames from the agent, as one batch.
    pub(crate) fn agent(&mut self, frames: &[Value]) -> Output {
        let lines = frames
            .iter()
            .map(|f| Line::Frame(f.to_string().into_bytes()))
            .collect();
        self.pipeline.agent_batch(&mut self.requests, lines)
    }

    pub(crate) fn agent_raw(&mut self, raw: &[u8]) -> Output {
        self.pipeline
            .agent_batch(&mut self.requests, vec![Line::Frame(raw.to_vec())])
    }

    pub(crate) fn upstream(&mut self, frame: Value) -> Output {
        self.pipeline.upstream_line(
            &mut self.answers,
            Line::Frame(frame.to_string().into_bytes()),
        )
    }

    /// A human's vote on the pending request of the held call (via the store, as a channel does).
    pub(crate) fn vote(&self, human: &str, verdict: Verdict) {
        let mut store = ApprovalStore::open(&self.db).unwrap();
        let pending = store
            .list(&airlock_approval::ListFilter {
                states: vec![airlock_approval::State::Pending],
                agent: None,
                session: None,
                limit: 100,
            })
            .unwrap()
            .into_iter()
            .find(|a| a.state == airlock_approval::State::Pending)
            .expect("a pending request");
        let vote = Vote {
            human: human.into(),
            verdict,
            channel: "cli".into(),
            comment: None,
            time_ns: airlock_audit::now_unix_ns(),
        };
        store.vote(&pending.id, &vote, |_| Ok(())).unwrap();
    }

    /// What the held-call review does now (on the store thread).
    pub(crate) fn review(&self) -> Output {
        let p = self.pipeline.clone();
        self.pipeline
            .stores()
            .unwrap()
            .call(move |s| p.review_held(s))
            .unwrap()
    }

    /// Every record in the audit trail, after the queued ones are written.
    pub(crate) fn records(&self) -> Vec<airlock_audit::StoredRecord> {
        self.pipeline.audit().flush();
        self.pipeline.audit().writer().flush(Duration::from_secs(5));
        let store = AuditStore::open_read_only(&self.db).unwrap();
        store.query(&Query::default()).unwrap()
    }
}

pub(crate) fn call(id: i64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
}

pub(crate) fn ok(id: i64, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The frames of an output, parsed.
pub(crate) fn frames(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

pub(crate) fn error_code(v: &Value) -> Option<i64> {
    v.get("error")?.get("code")?.as_i64()
}
