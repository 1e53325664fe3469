//! Decision latency with 10 and 1,000 policies (mostly per tool).
//!
//! `cargo run --release -p airlock-policy --example decide_bench`
//!
//! Prints p50/p99 of `decide` with a warm slice cache (round-robin over every
//! tool, which keeps CPU caches cold, and one tool repeatedly), of the first
//! decision on a target (slice built), of `visible` (first ask per tool, then
//! memoized), and, for comparison, of
//! plain Cedar evaluating the whole unsliced set.

use std::time::{Duration, Instant};

use airlock_policy::{
    Action, AgentEntity, CallRequest, EntityModel, HumanEntity, PolicyEngine, SHIPPED_SCHEMA,
};
use serde_json::json;

const CALLS: usize = 20_000;

fn model() -> EntityModel {
    EntityModel {
        agents: vec![AgentEntity {
            id: "bot".into(),
            on_behalf_of: "alice".into(),
            task: "triage".into(),
            groups: vec!["writers".into()],
        }],
        humans: vec![HumanEntity {
            id: "alice".into(),
            groups: vec!["eng".into()],
        }],
        tasks: vec!["triage".into()],
        servers: vec!["corp".into()],
    }
}

/// `n` policies: 2 global, the rest one or two per tool (a permit, and for
/// every third tool a forbid on its arguments).
fn policies(n: usize) -> (String, usize) {
    let mut out = vec![
        r#"@id("public-post") @approval("public posts need a sign-off")
forbid(principal, action == Action::"call_tool", resource == Tool::"corp/forum_post")
when { context.args has channel && context.args.channel == "public" }
unless { context.approval.granted };"#
            .to_owned(),
        r#"@id("interns-read-only") forbid(principal, action, resource)
when { principal.on_behalf_of in Group::"interns" };"#
            .to_owned(),
    ];
    let mut tools = 0;
    while out.len() < n {
        let i: usize = tools;
        tools += 1;
        out.push(format!(
            r#"@id("allow-t{i}") permit(principal in AgentGroup::"writers", action == Action::"call_tool", resource == Tool::"corp/t{i}")
when {{ principal.task == Task::"triage" }};"#
        ));
        if i.is_multiple_of(3) && out.len() < n {
            out.push(format!(
                r#"@id("limit-t{i}") forbid(principal, action, resource == Tool::"corp/t{i}")
when {{ context.args has cpus && context.args.cpus > 8 }};"#
            ));
        }
    }
    (out.join("\n"), tools)
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

fn report(label: &str, samples: &mut [Duration]) {
    let p50 = pct(samples, 0.50);
    let p99 = pct(samples, 0.99);
    println!(
        "  {label:<34} p50 {:>8.2} µs   p99 {:>8.2} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--no-baseline` skips the slow unsliced comparison (e.g. under a profiler).
    let skip_baseline = std::env::args().any(|a| a == "--no-baseline");
    let args = json!({"channel": "general", "title": "weekly", "body": "notes", "cpus": 2});
    for n in [10, 1_000] {
        let (text, tools) = policies(n);
        let engine = PolicyEngine::from_texts(
            SHIPPED_SCHEMA,
            &[("bench.cedar".into(), text.clone())],
            &model(),
        )?;
        println!(
            "{n} policies ({} loaded, {tools} tools):",
            engine.policies().len()
        );
        let rss_loaded = rss_kib();
        let req = |i: usize| CallRequest {
            agent: "bot",
            session: "s1",
            action: Action::CallTool,
            server: "corp",
            name: Box::leak(format!("t{}", i % tools).into_boxed_str()),
            args: Some(&args),
            approval_granted: false,
            labels: &[],
        };
        let reqs: Vec<CallRequest<'_>> = (0..tools).map(req).collect();

        // First call per target: the slice is built and cached.
        let mut cold: Vec<Duration> = reqs
            .iter()
            .map(|r| {
                let t = Instant::now();
                std::hint::black_box(engine.decide(r));
                t.elapsed()
            })
            .collect();
        let mut allowed = 0usize;
        let mut warm: Vec<Duration> = (0..CALLS)
            .map(|i| {
                let t = Instant::now();
                let d = std::hint::black_box(engine.decide(&reqs[i % reqs.len()]));
                let e = t.elapsed();
                allowed += usize::from(d.is_allow());
                e
            })
            .collect();
        let one = &reqs[reqs.len() / 2];
        let mut same: Vec<Duration> = (0..CALLS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(engine.decide(one));
                t.elapsed()
            })
            .collect();
        // A tool with a forbid on its arguments: its context is built and Cedar runs every time
        // (a slice that reads nothing from the context decides once per agent).
        let reads = &reqs[0];
        let mut same_reads: Vec<Duration> = (0..CALLS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(engine.decide(reads));
                t.elapsed()
            })
            .collect();
        let mut vis: Vec<Duration> = (0..CALLS)
            .map(|i| {
                let r = &reqs[i % reqs.len()];
                let t = Instant::now();
                std::hint::black_box(engine.visible(r.agent, r.action, r.server, r.name));
                t.elapsed()
            })
            .collect();
        report("decide, round-robin over all tools", &mut warm);
        report("decide, one tool repeatedly", &mut same);
        report("  the same, a policy reads its args", &mut same_reads);
        report("decide (first call on a target)", &mut cold);
        // The first ask per tool evaluates (partially, the context unknown); the rest are
        // answered from the slice's memo.
        let (first, again) = vis.split_at_mut(tools.min(CALLS));
        report("visible, first ask (partial eval)", first);
        report("visible, asked again (memoized)", again);
        println!("  allowed {allowed}/{CALLS}");
        if let (Some(before), Some(after)) = (rss_loaded, rss_kib()) {
            println!(
                "  RSS {before} KiB loaded, {after} KiB with {tools} slices cached (~{} B each)",
                (after.saturating_sub(before) * 1024) / tools as u64
            );
        }
        if !skip_baseline {
            unsliced(&text, &mut report_fn(), tools)?;
        }
    }
    Ok(())
}

/// Resident set size (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn report_fn() -> impl FnMut(&str, &mut [Duration]) {
    |label, samples| report(label, samples)
}

/// Plain Cedar on the whole set, for comparison (no slicing, same request).
fn unsliced(
    text: &str,
    report: &mut impl FnMut(&str, &mut [Duration]),
    tools: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, Schema};
    use std::str::FromStr;
    let (schema, _) = Schema::from_cedarschema_str(SHIPPED_SCHEMA)?;
    let set = PolicySet::from_str(text)?;
    let entities = Entities::from_json_value(
        json!([
            {"uid": {"type": "Agent", "id": "bot"},
             "attrs": {"on_behalf_of": {"__entity": {"type": "Human", "id": "alice"}},
                       "task": {"__entity": {"type": "Task", "id": "triage"}}},
             "parents": [{"type": "AgentGroup", "id": "writers"}]},
            {"uid": {"type": "Human", "id": "alice"}, "attrs": {}, "parents": [{"type": "Group", "id": "eng"}]},
            {"uid": {"type": "Task", "id": "triage"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Server", "id": "corp"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Tool", "id": "corp/t1"}, "attrs": {}, "parents": [{"type": "Server", "id": "corp"}]}
        ]),
        Some(&schema),
    )?;
    let context = Context::from_json_value(
        json!({"args": {"channel": "general", "cpus": 2}, "session": {"id": "s1"}, "approval": {"granted": false}}),
        None,
    )?;
    let request = Request::new(
        EntityUid::from_str(r#"Agent::"bot""#)?,
        EntityUid::from_str(r#"Action::"call_tool""#)?,
        EntityUid::from_str(r#"Tool::"corp/t1""#)?,
        context,
        None,
    )?;
    let authorizer = Authorizer::new();
    let n = if tools > 100 { 2_000 } else { CALLS };
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(authorizer.is_authorized(&request, &set, &entities));
            t.elapsed()
        })
        .collect();
    report("plain Cedar, whole set (baseline)", &mut samples);
    Ok(())
}
