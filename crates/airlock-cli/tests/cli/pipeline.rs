//! The gateway's request pipeline, end to end: which cancellations reach the upstream, how ids
//! are echoed and kept unique, MCP tasks, information-flow labels on every answer that carries
//! data, and the audit of the agent's answers to server requests. Part of the `cli` test binary
//! (its harness is `super::`).

use std::process::Stdio;

use serde_json::{json, Value};

use super::{
    error_code, eventually, next_answer, recorder, Env, Session, AIRLOCK, APPROVERS, POLICY, WAIT,
};

// === helpers ===

/// The next line from the gateway, as it came (for byte-exact checks of the id).
fn next_line(s: &mut Session) -> String {
    s.lines.recv_timeout(WAIT).expect("no frame from airlock")
}

/// A request frame.
fn request(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
}

/// A `notifications/cancelled` naming `request_id`.
fn cancel(request_id: &Value) -> Vec<u8> {
    json!({"jsonrpc":"2.0","method":"notifications/cancelled",
           "params":{"requestId":request_id,"reason":"test"}})
    .to_string()
    .into_bytes()
}

/// Every line the upstream received, parsed (the recorder logs them as they came).
fn received_frames(env: &Env) -> Vec<Value> {
    env.received()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `requestId`s of the cancellations that reached the upstream.
fn cancellations_upstream(env: &Env) -> Vec<Value> {
    received_frames(env)
        .into_iter()
        .filter(|f| f["method"] == "notifications/cancelled")
        .map(|f| f["params"]["requestId"].clone())
        .collect()
}

/// Audit records of `method`.
fn records_of(records: &[Value], method: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["method"] == method)
        .cloned()
        .collect()
}

/// The raw text of the top-level `"id"` member of a compact JSON line.
fn raw_id(line: &str) -> &str {
    let start = line
        .find(r#""id":"#)
        .unwrap_or_else(|| panic!("no id member in {line}"))
        + r#""id":"#.len();
    let rest = line[start..].trim_start();
    let end = rest
        .find([',', '}'])
        .unwrap_or_else(|| panic!("unterminated id in {line}"));
    rest[..end].trim_end()
}

/// `airlock check` accepts the config (so a test fails here, with the reason, when the gateway
/// does not know a config key yet, rather than on a gateway that never started).
fn assert_config_accepted(env: &Env) {
    let config = env.config();
    let out = env.airlock(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "airlock check refused the config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like `Env::start`, with the agent declaring `capabilities` in `initialize`.
fn start_with_capabilities(env: &Env, capabilities: Value) -> Session {
    let mut child = std::process::Command::new(AIRLOCK)
        .args(["run", "--config"])
        .arg(env.config())
        .args(["--agent", "bot", "--session", "test", "--", "python3"])
        .arg(recorder())
        .env("RECORDER_LOG", env.log())
        .envs(env.recorder_env.iter().copied())
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut s = Session {
        child,
        stdin,
        lines: rx,
    };
    let init = s.call(request(
        json!("init"),
        "initialize",
        json!({"protocolVersion":"2025-11-25","capabilities":capabilities,
               "clientInfo":{"name":"t","version":"1"}}),
    ));
    assert!(init.get("result").is_some(), "{init}");
    s.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    s
}

/// The late answers the recorder's "slow" tool has written (their ids).
fn late_answers(env: &Env) -> Vec<Value> {
    let path = format!("{}.late", env.log().display());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

// === 1. cancellation ===

/// POLICY, plus every write allowed but public ones held for a human.
fn policy_with_holds() -> String {
    format!(
        r#"{POLICY}
@id("allow-write")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/write");

@id("public-posts")
@approval("public posts need a human sign-off")
@approvers("comms")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/write")
when {{ context.args has channel && context.args.channel == "public" }}
unless {{ context.approval.granted }};
"#
    )
}

#[test]
fn only_cancellations_of_the_agents_own_calls_in_flight_reach_the_upstream() {
    let mut env = Env::with_config(&policy_with_holds(), "", APPROVERS);
    env.recorder_env = vec![("RECORDER_SLOW", "60")];
    let mut s = env.start();
    // An answered call, a held call, and a call in flight upstream.
    assert!(s
        .tool(2, "echo", json!({"m": "answered"}))
        .get("result")
        .is_some());
    s.send_raw(
        request(
            json!(3),
            "tools/call",
            json!({"name":"write","arguments":{"channel":"public","body":"held"}}),
        )
        .to_string()
        .as_bytes(),
    );
    env.pending_approval();
    s.send_raw(
        request(
            json!(4),
            "tools/call",
            json!({"name":"slow","arguments":{"marker":"in-flight"}}),
        )
        .to_string()
        .as_bytes(),
    );
    eventually("the slow call never reached the upstream", || {
        env.received().contains("in-flight")
    });

    // Answered, held, never sent, ids the agent never used (0, 1, a string "4" for the int 4).
    let bogus = [
        json!(2),
        json!(3),
        json!(99),
        json!(0),
        json!(1),
        json!("4"),
        json!("never-sent"),
    ];
    for id in &bogus {
        s.send_raw(&cancel(id));
    }
    // The ping goes upstream after them: once it is answered, the recorder has logged
    // everything the gateway forwarded before it.
    s.ping(5);
    assert_eq!(
        cancellations_upstream(&env),
        Vec::<Value>::new(),
        "cancellations of no request of the agent's in flight reached the upstream"
    );
    // The held call was withdrawn, not forwarded.
    eventually("the held call was not withdrawn", || {
        env.approval_list()
            .iter()
            .any(|a| a["state"] == "withdrawn")
    });

    // The agent's own call in flight: its cancellation is forwarded.
    s.send_raw(&cancel(&json!(4)));
    eventually(
        "the cancellation of the call in flight never reached the upstream",
        || !cancellations_upstream(&env).is_empty(),
    );
    s.ping(6);
    assert_eq!(cancellations_upstream(&env), vec![json!(4)]);
    assert!(!env.received().contains(r#""body":"held""#));
    s.finish();

    let records = env.audit();
    let denied: Vec<Value> = records_of(&records, "notifications/cancelled")
        .into_iter()
        .filter(|r| r["decision"] == "deny")
        .collect();
    // A cancellation of the held call is honoured (the request is withdrawn, on the record as
    // an approval event), so it is not a refusal.
    assert_eq!(
        denied.len(),
        bogus.len() - 1,
        "one deny record per refused cancellation: {denied:#?}"
    );
}

// === 2. ids ===

#[test]
fn an_id_beyond_the_safe_integer_range_is_refused_with_the_id_echoed_byte_for_byte() {
    let env = Env::new(POLICY);
    let mut s = env.start();
    let ids = [
        "9007199254740993",
        "-9007199254740993",
        "18446744073709551616",
    ];
    for (i, raw) in ids.iter().enumerate() {
        let n = i64::try_from(i).unwrap();
        s.send_raw(format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"ping"}}"#).as_bytes());
        let line = next_line(&mut s);
        assert_eq!(raw_id(&line), *raw, "the id was not echoed as sent: {line}");
        let reply: Value = serde_json::from_str(&line).unwrap();
        // -32700: JSON that two peers would read differently (see docs/errors.md).
        assert_eq!(error_code(&reply), -32700, "{line}");
        s.ping(100 + n);
        // A call with such an id is refused too, and never forwarded.
        s.send_raw(
            format!(
                r#"{{"jsonrpc":"2.0","id":{raw},"method":"tools/call","params":{{"name":"echo","arguments":{{"m":"big-id-{i}"}}}}}}"#
            )
            .as_bytes(),
        );
        let line = next_line(&mut s);
        assert_eq!(raw_id(&line), *raw, "the id was not echoed as sent: {line}");
        let reply: Value = serde_json::from_str(&line).unwrap();
        // -32700: JSON that two peers would read differently (see docs/errors.md).
        assert_eq!(error_code(&reply), -32700, "{line}");
        s.ping(200 + n);
    }
    // Not JSON at all, or a null id: the error names no id.
    for (n, (bytes, code)) in [
        (&b"this is not json"[..], -32700),
        (
            &br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#[..],
            -32600,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        s.send_raw(bytes);
        let line = next_line(&mut s);
        assert_eq!(raw_id(&line), "null", "{line}");
        let reply: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(error_code(&reply), code, "{line}");
        s.ping(300 + i64::try_from(n).unwrap());
    }
    assert!(s.finish().success());
    assert!(!env.received().contains("big-id"), "{}", env.received());
}

// === 3. id uniqueness ===

/// Public writes are held (APPROVAL_POLICY of cli.rs); echo and other writes are allowed.
fn held_write(id: i64, body: &str) -> Value {
    request(
        json!(id),
        "tools/call",
        json!({"name":"write","arguments":{"channel":"public","body":body}}),
    )
}

#[test]
fn a_held_calls_id_is_taken_even_for_a_request_in_the_same_write() {
    let env = Env::with_config(super::APPROVAL_POLICY, "", APPROVERS);
    let mut s = env.start();
    // The held call and a second request with its id, in one write.
    let dup = request(
        json!(7),
        "tools/call",
        json!({"name":"echo","arguments":{"message":"dup-same-write"}}),
    );
    s.send_raw(format!("{}\n{dup}", held_write(7, "held-body")).as_bytes());
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(7), "{reply}");
    assert_eq!(error_code(&reply), -31005, "{reply}");
    let approval = env.pending_approval();
    // And in a write of its own, while the call is held.
    let reply = s.call(request(
        json!(7),
        "tools/call",
        json!({"name":"echo","arguments":{"message":"dup-later"}}),
    ));
    assert_eq!(error_code(&reply), -31005, "{reply}");
    s.ping(8);
    let received = env.received();
    assert!(
        !received.contains("dup-same-write") && !received.contains("dup-later"),
        "a request reusing a held call's id reached the upstream: {received}"
    );
    assert!(!received.contains("held-body"));
    // The held call is still held, and goes through once approved.
    let list = env.approval_list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "pending");
    let bob = env.approvals(Some("bob"), &["approve", &approval]);
    assert!(
        bob.status.success(),
        "{}",
        String::from_utf8_lossy(&bob.stderr)
    );
    let reply = next_answer(&mut s);
    assert_eq!(reply["id"], json!(7), "{reply}");
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("held-body")),
        "{reply}"
    );
    s.ping(9);
    s.finish();
    assert_eq!(env.received().matches("held-body").count(), 1);
}

#[test]
fn a_timed_out_id_stays_taken_until_the_upstreams_late_answer_which_never_reaches_the_agent() {
    let mut env = Env::with_gateway(POLICY, "call_timeout_secs = 1");
    env.recorder_env = vec![("RECORDER_SLOW", "6")];
    let mut s = env.start();
    let reply = s.tool(7, "slow", json!({"marker": "first"}));
    assert_eq!(reply["id"], json!(7), "{reply}");
    assert_eq!(error_code(&reply), -31006, "{reply}");
    assert!(
        late_answers(&env).is_empty(),
        "the upstream answered before the test could reuse the id (machine too slow)"
    );
    // The upstream may still answer id 7: the id is not free yet.
    let reply = s.tool(7, "echo", json!({"message": "reuse-early"}));
    assert_eq!(reply["id"], json!(7), "{reply}");
    assert_eq!(error_code(&reply), -31005, "{reply}");
    assert!(
        late_answers(&env).is_empty(),
        "the upstream answered before the reuse was refused (machine too slow)"
    );
    // The late answer comes; it goes nowhere. Answers come back in order, so the ping's answer
    // is the next frame unless the late one was delivered.
    eventually("the upstream never sent its late answer", || {
        late_answers(&env) == vec![json!(7)]
    });
    s.ping(8);
    // Now the id is free again.
    let reply = s.tool(7, "echo", json!({"message": "reuse-late"}));
    assert_eq!(reply["id"], json!(7), "{reply}");
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("reuse-late")),
        "{reply}"
    );
    s.ping(9);
    assert!(s.finish().success());
    let received = env.received();
    assert!(!received.contains("reuse-early"), "{received}");
    assert_eq!(env.call_record("slow")["result_status"], "timeout");
}

// === 4. tasks ===

const TASK_POLICY: &str = r#"
@id("allow-write")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/write");
@id("allow-secret")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/secret");
@id("allow-echo")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/echo");
@id("allow-slow")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/slow");
@id("no-writes-after-confidential")
@reason("this agent has read confidential data; it may not write")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/write")
when { context.session.labels.contains("confidential") };
"#;

fn as_task(id: i64, name: &str, args: Value) -> Value {
    request(
        json!(id),
        "tools/call",
        json!({"name":name,"arguments":args,"task":{"ttl":60000}}),
    )
}

fn task_request(id: i64, method: &str, task_id: &str) -> Value {
    request(json!(id), method, json!({"taskId": task_id}))
}

#[test]
fn the_result_of_a_task_labels_the_session_like_the_call_it_came_from() {
    // The label depends on the real result (`restricted` in it), which only tasks/result carries.
    let flow = "[flow.labels.confidential]\ntools = [\"rec/secret\"]\n\
                result = \"/structuredContent/restricted\"\n";
    let env = Env::with_config(TASK_POLICY, "", flow);
    let mut s = env.start();
    let write = |id: i64| {
        request(
            json!(id),
            "tools/call",
            json!({"name":"write","arguments":{"body":"w"}}),
        )
    };
    assert!(s.call(write(1)).get("result").is_some());
    let created = s.call(as_task(
        2,
        "secret",
        json!({"repo": "payroll", "structured": {"restricted": true}}),
    ));
    let task = &created["result"]["task"];
    let task_id = task["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("no task created: {created}"))
        .to_owned();
    assert_eq!(task["status"], "working", "{created}");
    let got = s.call(task_request(3, "tasks/result", &task_id));
    assert_eq!(got["id"], json!(3), "{got}");
    assert_eq!(
        got["result"]["structuredContent"]["restricted"],
        json!(true),
        "{got}"
    );
    let reply = s.call(write(4));
    assert_eq!(
        error_code(&reply),
        -31001,
        "the task's result did not label the session: {reply}"
    );
    s.finish();

    assert_eq!(env.received().matches(r#""name":"write""#).count(), 1);
    let records = env.audit();
    assert!(
        !records_of(&records, "tasks/result").is_empty(),
        "no audit record of tasks/result"
    );
    let label = records
        .iter()
        .find(|r| r["kind"] == "flow")
        .expect("no flow record");
    assert_eq!(label["detail"]["label"], "confidential");
}

#[test]
fn tasks_the_agent_did_not_create_through_airlock_are_refused_and_never_reach_the_upstream() {
    let env = Env::new(TASK_POLICY);
    let mut s = env.start();
    // The agent's own task works.
    let created = s.call(as_task(1, "echo", json!({"m": "mine"})));
    let own = created["result"]["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("no task created: {created}"))
        .to_owned();
    let got = s.call(task_request(2, "tasks/get", &own));
    assert_eq!(got["result"]["taskId"], json!(own), "{got}");
    // Another client's task on the same server, and a made-up one.
    let mut id = 10;
    for task_id in ["foreign-task-1", "guessed-task-id"] {
        for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
            let reply = s.call(task_request(id, method, task_id));
            assert_eq!(reply["id"], json!(id), "{reply}");
            assert_eq!(error_code(&reply), -31001, "{method} {task_id}: {reply}");
            id += 1;
        }
    }
    s.ping(99);
    s.finish();
    let received = env.received();
    assert!(
        !received.contains("foreign-task-1") && !received.contains("guessed-task-id"),
        "a request for a task the agent never created reached the upstream: {received}"
    );
    let records = env.audit();
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        assert!(
            records_of(&records, method)
                .iter()
                .filter(|r| r["decision"] == "deny")
                .count()
                >= 2,
            "no deny records of {method}"
        );
    }
}

// === 5. labels on every answer that carries data ===

const LABEL_POLICY: &str = r#"
@id("allow-write")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/write");
@id("allow-fail")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/fail");
@id("allow-oops")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/oops");
@id("allow-files")
permit (principal == Agent::"bot", action == Action::"read_resource", resource in Server::"rec");
@id("allow-prompts")
permit (principal == Agent::"bot", action == Action::"get_prompt", resource in Server::"rec");
@id("no-writes-after-confidential")
@reason("this agent has read confidential data; it may not write")
forbid (principal, action == Action::"call_tool", resource == Tool::"rec/write")
when { context.session.labels.contains("confidential") };
"#;

/// Runs `unlabelled` (which must not label) and `labelled` (which must) between writes; the
/// first write goes through, the one after `unlabelled` too, the last is denied.
fn labels_after(flow: &str, unlabelled: Option<Value>, labelled: Value, check: impl Fn(&Value)) {
    let env = Env::with_config(LABEL_POLICY, "", flow);
    assert_config_accepted(&env);
    let mut s = env.start();
    let write = |id: i64| {
        request(
            json!(id),
            "tools/call",
            json!({"name":"write","arguments":{"body":"w"}}),
        )
    };
    assert!(s.call(write(1)).get("result").is_some());
    if let Some(frame) = unlabelled {
        let reply = s.call(frame);
        assert!(reply.get("result").is_some(), "{reply}");
        let reply = s.call(write(3));
        assert!(reply.get("result").is_some(), "labelled too early: {reply}");
    }
    let reply = s.call(labelled);
    check(&reply);
    let reply = s.call(write(5));
    assert_eq!(
        error_code(&reply),
        -31001,
        "the answer did not label the session: {reply}"
    );
    s.finish();
    let records = env.audit();
    let label = records
        .iter()
        .find(|r| r["kind"] == "flow")
        .expect("no flow record");
    assert_eq!(label["detail"]["label"], "confidential");
}

#[test]
fn reading_a_labelled_resource_labels_the_session() {
    labels_after(
        "[flow.labels.confidential]\ntools = [\"rec/secret\"]\nresources = [\"rec/file:///hr/*\"]\n",
        Some(request(json!(2), "resources/read", json!({"uri":"file:///public/readme.txt"}))),
        request(json!(4), "resources/read", json!({"uri":"file:///hr/salaries.csv"})),
        |reply| {
            assert_eq!(
                reply["result"]["contents"][0]["uri"],
                "file:///hr/salaries.csv",
                "{reply}"
            );
        },
    );
}

#[test]
fn getting_a_labelled_prompt_labels_the_session() {
    labels_after(
        "[flow.labels.confidential]\ntools = [\"rec/secret\"]\nprompts = [\"rec/payroll-*\"]\n",
        Some(request(json!(2), "prompts/get", json!({"name":"greeting"}))),
        request(json!(4), "prompts/get", json!({"name":"payroll-summary"})),
        |reply| assert!(reply["result"]["messages"][0].is_object(), "{reply}"),
    );
}

#[test]
fn an_is_error_result_of_a_labelled_tool_labels_the_session() {
    labels_after(
        "[flow.labels.confidential]\ntools = [\"rec/fail\"]\n",
        None,
        request(
            json!(4),
            "tools/call",
            json!({"name":"fail","arguments":{"q":"payroll"}}),
        ),
        |reply| {
            assert_eq!(reply["result"]["isError"], json!(true), "{reply}");
            assert!(reply["result"]["content"][0]["text"].is_string(), "{reply}");
        },
    );
}

#[test]
fn a_json_rpc_error_with_data_from_a_labelled_tool_labels_the_session() {
    labels_after(
        "[flow.labels.confidential]\ntools = [\"rec/oops\"]\n",
        None,
        request(
            json!(4),
            "tools/call",
            json!({"name":"oops","arguments":{"q":"payroll"}}),
        ),
        |reply| {
            assert_eq!(error_code(reply), -32603, "{reply}");
            assert!(reply["error"]["data"].is_object(), "{reply}");
        },
    );
}

// === 6. the agent's answers to server requests ===

#[test]
fn the_agents_answers_to_server_requests_are_audited_and_stray_ones_dropped() {
    let policy = r#"
@id("allow-sample")
permit (principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"rec/sample");
"#;
    let env = Env::new(policy);
    let mut s = start_with_capabilities(&env, json!({"sampling": {}}));
    s.send_raw(
        request(
            json!(1),
            "tools/call",
            json!({"name":"sample","arguments":{"q":"hi"}}),
        )
        .to_string()
        .as_bytes(),
    );
    let asked = s.next();
    assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
    let server_id = asked["id"].clone();
    let answer = |text: &str, id: &Value| {
        json!({"jsonrpc":"2.0","id":id,"result":{"role":"assistant",
               "content":{"type":"text","text":text},"model":"test-model"}})
        .to_string()
    };
    // An answer to a request the server never sent, then the real answer, then a second one.
    s.send_raw(answer("stray-answer", &json!("srv-never-sent")).as_bytes());
    s.send_raw(answer("real-answer", &server_id).as_bytes());
    let reply = s.next();
    assert_eq!(reply["id"], json!(1), "{reply}");
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("real-answer")),
        "{reply}"
    );
    s.send_raw(answer("second-answer", &server_id).as_bytes());
    s.ping(2);
    assert!(s.finish().success());
    let received = env.received();
    assert!(received.contains("real-answer"));
    assert!(
        !received.contains("stray-answer") && !received.contains("second-answer"),
        "{received}"
    );

    let records = env.audit();
    let sampling = records_of(&records, "sampling/createMessage");
    assert!(
        sampling
            .iter()
            .any(|r| r["status"] == "ok" || r["result_status"] == "ok"),
        "no audit record of the agent's sampling answer: {sampling:#?}"
    );
    let stray: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "deny" && r.to_string().contains("srv-never-sent"))
        .collect();
    assert_eq!(stray.len(), 1, "the stray answer was not audited as denied");
}
