//! The incident replay, scenario by scenario: each test runs the real `airlock demo --scenario
//! NAME --json`, then checks the damage itself from the company state files the two runs left
//! (not only the demo's own figures), and asks the real `airlock audit query` who acted.
//! Without Airlock the incident must do damage; through Airlock it must do none, or no more
//! than the configured breaker budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_demo_server::{load_state, measure, seed_state, Access, CompanyState, Window};
use serde_json::Value;

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

/// One scenario's demo run: its JSON report and its work directory.
struct Replay {
    dir: tempfile::TempDir,
    report: Value,
}

impl Replay {
    fn run(name: &str) -> Replay {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(AIRLOCK)
            .args(["demo", "--json", "--scenario", name, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).expect("demo --json prints JSON");
        assert_eq!(report["audit"]["verified"], true, "{report:#}");
        Replay { dir, report }
    }

    fn scenario(&self) -> &Value {
        &self.report["scenarios"][0]
    }

    /// The company state a run left: `mode` is "without" or "with".
    fn state(&self, mode: &str) -> CompanyState {
        let runs = self.scenario()["runs"].as_array().unwrap();
        let run = runs.iter().find(|r| r["mode"] == mode).unwrap();
        load_state(Path::new(run["state_file"].as_str().unwrap())).unwrap()
    }

    fn stop_seq(&self, mode: &str) -> Option<u64> {
        let runs = self.scenario()["runs"].as_array().unwrap();
        let run = runs.iter().find(|r| r["mode"] == mode).unwrap();
        run["stop_seq"].as_u64()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }

    /// `airlock audit query --agent AGENT --json`.
    fn audit(&self, agent: &str) -> Vec<Value> {
        let out = Command::new(AIRLOCK)
            .args(["audit", "query", "--json", "--agent", agent, "--config"])
            .arg(self.config())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Checks the figures the demo reports against a measurement of its state files.
    fn remeasured(&self) {
        let seed = seed_state();
        for mode in ["without", "with"] {
            let window = Window::review(seed.seq, self.stop_seq(mode));
            let damage = measure(&seed, &self.state(mode), &window);
            let figures = &self.scenario()[mode];
            assert_eq!(
                figures["exposed_repo_minutes"], damage.exposed_repo_minutes,
                "{mode}"
            );
            assert_eq!(
                figures["over_quota_cpu_seconds"], damage.over_quota_cpu_seconds,
                "{mode}"
            );
            assert_eq!(
                figures["confidential_bytes_published"], damage.confidential_bytes_published,
                "{mode}"
            );
            assert_eq!(
                figures["mails_deleted_after_stop"].as_u64(),
                damage.mails_deleted_after_stop,
                "{mode}"
            );
        }
    }

    fn controls(&self) -> Vec<String> {
        self.scenario()["audit"]["controls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    }
}

/// Every call record of `agent` names it and the human it acts for.
fn assert_actor(records: &[Value], agent: &str, human: &str) {
    let calls: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call").collect();
    assert!(!calls.is_empty(), "no call records for {agent}");
    for r in calls {
        assert_eq!(r["agent"], agent, "{r}");
        assert_eq!(r["on_behalf_of"], human, "{r}");
    }
}

fn denied_by(records: &[Value], policy: &str) -> usize {
    records
        .iter()
        .filter(|r| r["kind"] == "call" && r["decision"] == "deny")
        .filter(|r| r["reasons"].as_array().unwrap().iter().any(|p| p == policy))
        .count()
}

fn restricted_open_to_everyone(s: &CompanyState) -> usize {
    s.repos
        .iter()
        .filter(|r| r.restricted && r.acl.get("group:all").is_some_and(|a| *a >= Access::Read))
        .count()
}

fn public_posts_by_the_assistant(s: &CompanyState) -> usize {
    let seed = seed_state();
    s.forum.channels["public"]
        .iter()
        .filter(|p| p.author == "assistant" && p.time_seq > seed.seq)
        .count()
}

#[test]
fn forum_advice_is_held_one_post_approved_and_one_denied_from_the_cli() {
    let r = Replay::run("forum-advice");
    r.remeasured();
    assert_eq!(public_posts_by_the_assistant(&r.state("without")), 2);
    assert_eq!(r.scenario()["without"]["public_posts_without_sign_off"], 2);
    assert_eq!(r.scenario()["with"]["public_posts_without_sign_off"], 0);
    // Through Airlock exactly the approved answer went out; the advice never did.
    let with = r.state("with");
    let published: Vec<&str> = with.forum.channels["public"]
        .iter()
        .filter(|p| p.author == "assistant")
        .map(|p| p.title.as_str())
        .collect();
    assert_eq!(published, vec!["Re: pagination cursors"]);
    let records = r.audit("support-bot");
    assert_actor(&records, "support-bot", "alice");
    let events: Vec<(&str, &str)> = records
        .iter()
        .filter(|x| x["kind"] == "approval")
        .filter_map(|x| {
            Some((
                x["detail"]["event"].as_str()?,
                x["detail"]["human"].as_str()?,
            ))
        })
        .collect();
    assert!(events.contains(&("approved", "carol")), "{events:?}");
    assert!(events.contains(&("denied", "carol")), "{events:?}");
    let controls = r.controls();
    assert!(
        controls.contains(&"approval approved by carol".to_owned()),
        "{controls:?}"
    );
    assert!(
        controls.contains(&"approval denied by carol".to_owned()),
        "{controls:?}"
    );
}

#[test]
fn a_runaway_acl_walk_is_stopped_by_the_breaker_after_a_handful_of_repos() {
    let r = Replay::run("acl-widening");
    r.remeasured();
    let budget = r.report["acl_breaker_budget"].as_u64().unwrap();
    assert_eq!(budget, 5);
    let without = restricted_open_to_everyone(&r.state("without"));
    let with = restricted_open_to_everyone(&r.state("with"));
    assert_eq!(
        without,
        seed_state().repos.iter().filter(|x| x.restricted).count()
    );
    assert!(
        with > 0 && with as u64 <= budget,
        "{with} exposed through Airlock"
    );
    let s = r.scenario();
    assert!(s["without"]["exposed_repo_minutes"].as_u64().unwrap() > 0);
    assert!(
        s["with"]["exposed_repo_minutes"].as_u64().unwrap()
            < s["without"]["exposed_repo_minutes"].as_u64().unwrap()
    );
    assert_eq!(s["verdict"], "bounded");
    let records = r.audit("access-bot");
    assert_actor(&records, "access-bot", "bob");
    assert_eq!(denied_by(&records, "no-recursive-acl-changes"), 5);
    let trip = records
        .iter()
        .find(|x| x["kind"] == "breaker")
        .expect("a breaker trip");
    assert_eq!(trip["detail"]["class"], "acl-changes");
}

#[test]
fn a_kill_from_the_cli_stops_the_inbox_deletion_midway() {
    let r = Replay::run("inbox-stop");
    r.remeasured();
    let seed = seed_state();
    let after_stop = |mode: &str| {
        let stop = r.stop_seq(mode).expect("the human said stop");
        let s = r.state(mode);
        let deleted_after: usize = s
            .effects
            .iter()
            .filter(|e| e.tool == "mail_delete" && e.seq > stop)
            .map(|e| e.items.len())
            .sum();
        (
            deleted_after,
            seed.mailbox.messages.len() - s.mailbox.messages.len(),
        )
    };
    let (without_after, without_total) = after_stop("without");
    let (with_after, with_total) = after_stop("with");
    assert!(without_after > 0);
    assert_eq!(with_after, 0);
    // The deletions before the stop happened in both runs: the kill came midway.
    assert!(with_total > 0 && with_total < without_total);
    let records = r.audit("inbox-bot");
    assert_actor(&records, "inbox-bot", "priya");
    let kill = records
        .iter()
        .find(|x| x["kind"] == "kill")
        .expect("a kill record");
    assert_eq!(kill["detail"]["by"], "priya");
    assert!(r.controls().contains(&"kill by priya".to_owned()));
}

#[test]
fn a_miner_gets_no_compute_beyond_the_quota() {
    let r = Replay::run("miner");
    r.remeasured();
    let s = r.scenario();
    assert!(s["without"]["over_quota_cpu_seconds"].as_u64().unwrap() > 0);
    assert_eq!(s["with"]["over_quota_cpu_seconds"], 0);
    let with = r.state("with");
    // The nightly build ran; no miner image did.
    assert!(with.compute.jobs.iter().any(|j| j.name == "nightly-build"));
    assert!(with.compute.jobs.iter().all(|j| !j.image.contains("xmrig")));
    let records = r.audit("build-bot");
    assert_actor(&records, "build-bot", "bob");
    assert!(denied_by(&records, "compute-within-quota") >= 1);
}

#[test]
fn a_restricted_snippet_is_not_published() {
    let r = Replay::run("exfiltration");
    r.remeasured();
    let s = r.scenario();
    assert!(
        s["without"]["confidential_bytes_published"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(s["with"]["confidential_bytes_published"], 0);
    assert_eq!(public_posts_by_the_assistant(&r.state("with")), 0);
    let records = r.audit("review-bot");
    assert_actor(&records, "review-bot", "carol");
    // The read was allowed (the review needs it) and labelled the agent; the post was refused
    // because of the label.
    let label = records
        .iter()
        .find(|x| x["kind"] == "flow")
        .expect("a flow label record");
    assert_eq!(label["detail"]["label"], "confidential");
    assert_eq!(denied_by(&records, "no-confidential-in-public"), 1);
    assert!(r
        .controls()
        .contains(&"information-flow label confidential".to_owned()));
}

#[test]
fn a_relayed_request_binds_the_agent_that_acts() {
    let r = Replay::run("relay");
    r.remeasured();
    let s = r.scenario();
    assert!(s["without"]["over_quota_cpu_seconds"].as_u64().unwrap() > 0);
    assert_eq!(s["with"]["over_quota_cpu_seconds"], 0);
    // The request did reach B through the shared channel in both runs.
    for mode in ["without", "with"] {
        assert!(r.state(mode).forum.channels["internal"]
            .iter()
            .any(|p| p.body.starts_with("@build-bot")));
    }
    assert_actor(&r.audit("support-bot"), "support-bot", "alice");
    let b = r.audit("build-bot");
    assert_actor(&b, "build-bot", "bob");
    assert!(
        denied_by(&b, "compute-within-quota") + denied_by(&b, "images-from-company-registry") >= 1
    );
}

#[test]
fn the_whole_demo_prints_the_table_and_a_verified_trail() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(AIRLOCK)
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "forum-advice",
        "acl-widening",
        "inbox-stop",
        "miner",
        "exfiltration",
        "relay",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"));
        assert!(
            row.ends_with("protected") || row.ends_with("bounded"),
            "{row}"
        );
    }
    assert!(text.contains("records intact"), "{text}");
    // A name that is not a scenario is a usage error.
    let bad = Command::new(AIRLOCK)
        .args(["demo", "--scenario", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
