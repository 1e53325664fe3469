//! Running one scenario once: a fresh company state, the scenario's agents started either
//! straight against the demo server or through `airlock run`, the human's part played through
//! the real CLI (`airlock kill`, `airlock approvals`), and the damage measured from the state
//! file the server left.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_demo_server::{load_state, measure, seed_state, Damage, Window};
use anyhow::{anyhow, Context};
use serde::Serialize;
use serde_json::{json, Value};

use super::agent::{classify, Reply, Session, REPLY_TIMEOUT};

/// The human who says stop, and the one who signs posts off: names in the demo config.
pub(crate) const APPROVER: &str = "carol";

/// Whether a run goes through Airlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    Without,
    With,
}

/// What the human decides about a held call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Approve,
    Deny,
}

/// What every run shares: the binary, the work directory, the config and the humans' token.
pub(crate) struct Env {
    pub(crate) exe: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    /// One token for every demo human (each has its digest in the config).
    pub(crate) token: String,
    pub(crate) interactive: bool,
}

impl Env {
    /// Runs `airlock ARGS…` as a human (the token in `$AIRLOCK_TOKEN`).
    pub(crate) fn as_human(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new(&self.exe)
            .args(args)
            .env("AIRLOCK_TOKEN", &self.token)
            .env("AIRLOCK_LOG", "error")
            .output()
            .with_context(|| format!("cannot run airlock {}", args.join(" ")))
    }

    fn config_arg(&self) -> String {
        self.config.display().to_string()
    }
}

/// One step of a transcript.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Step {
    pub(crate) agent: String,
    pub(crate) action: String,
    pub(crate) outcome: String,
}

/// What one run left behind.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct RunResult {
    pub(crate) mode: Mode,
    pub(crate) damage: Damage,
    /// Public posts a human approved before they went out (not damage).
    pub(crate) signed_off_posts: u64,
    /// The company clock when the human said stop, if the scenario has a stop.
    pub(crate) stop_seq: Option<u64>,
    pub(crate) state_file: PathBuf,
    pub(crate) steps: Vec<Step>,
}

impl RunResult {
    pub(crate) fn public_posts_without_sign_off(&self) -> u64 {
        self.damage
            .public_posts
            .saturating_sub(self.signed_off_posts)
    }
}

/// An agent's live session.
pub(crate) struct Agent {
    name: String,
    session: Session,
}

impl Agent {
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        self.session.finish()
    }
}

/// The scenario's view of the world while it runs.
pub(crate) struct Ctx<'a> {
    env: &'a Env,
    mode: Mode,
    scenario: &'static str,
    state: PathBuf,
    started: bool,
    stop_seq: Option<u64>,
    /// `--interactive`: the demo asked a person to kill this agent and watches for it.
    awaiting_kill: Option<String>,
    signed_off: u64,
    steps: Vec<Step>,
}

impl<'a> Ctx<'a> {
    fn new(env: &'a Env, mode: Mode, scenario: &'static str) -> Ctx<'a> {
        let suffix = match mode {
            Mode::Without => "without",
            Mode::With => "with",
        };
        Ctx {
            env,
            mode,
            scenario,
            state: env.dir.join(format!("{scenario}-{suffix}-airlock.json")),
            started: false,
            stop_seq: None,
            awaiting_kill: None,
            signed_off: 0,
            steps: Vec::new(),
        }
    }

    /// The session name an agent gets in this scenario (for the audit query).
    pub(crate) fn session_name(scenario: &str, agent: &str) -> String {
        format!("demo-{scenario}-{agent}")
    }

    /// Starts `agent`'s session. The first session of a run starts from the seed.
    pub(crate) fn agent(&mut self, agent: &str) -> anyhow::Result<Agent> {
        let exe = self.env.exe.display().to_string();
        let mut server = vec![
            "demo-server".to_owned(),
            "--state".to_owned(),
            self.state.display().to_string(),
        ];
        if !self.started {
            server.push("--reset".to_owned());
            self.started = true;
        }
        let args: Vec<String> = match self.mode {
            Mode::Without => server,
            Mode::With => {
                let mut a = vec![
                    "run".to_owned(),
                    "--config".to_owned(),
                    self.env.config_arg(),
                    "--agent".to_owned(),
                    agent.to_owned(),
                    "--session".to_owned(),
                    Self::session_name(self.scenario, agent),
                    "--".to_owned(),
                    exe,
                ];
                a.extend(server);
                a
            }
        };
        let log = self.env.dir.join(format!("{}.log", self.scenario));
        let session = Session::start(&self.env.exe, &args, &self.env.dir, &log)
            .with_context(|| format!("cannot start {agent}'s session"))?;
        Ok(Agent {
            name: agent.to_owned(),
            session,
        })
    }

    fn note(&mut self, agent: &Agent, tool: &str, args: &Value, reply: &Reply) {
        let mut shown = args.to_string();
        if shown.len() > 90 {
            shown = format!("{}…", shown.chars().take(90).collect::<String>());
        }
        self.steps.push(Step {
            agent: agent.name.clone(),
            action: format!("{tool} {shown}"),
            outcome: reply.summary(),
        });
    }

    /// Calls a tool as the agent.
    pub(crate) fn call(
        &mut self,
        agent: &mut Agent,
        tool: &str,
        args: Value,
    ) -> anyhow::Result<Reply> {
        let reply = agent.session.call(tool, args.clone())?;
        self.note(agent, tool, &args, &reply);
        Ok(reply)
    }

    /// Calls a tool that a policy may hold for a human; the human's answer is `verdict` (played
    /// through `airlock approvals`, or by a real person with `--interactive`).
    pub(crate) fn call_reviewed(
        &mut self,
        agent: &mut Agent,
        tool: &str,
        args: Value,
        verdict: Verdict,
    ) -> anyhow::Result<Reply> {
        if self.mode == Mode::Without {
            return self.call(agent, tool, args);
        }
        let id = agent
            .session
            .send_request("tools/call", json!({"name": tool, "arguments": args}))?;
        let limit = if self.env.interactive {
            Duration::from_secs(600)
        } else {
            REPLY_TIMEOUT
        };
        let deadline = Instant::now() + limit;
        let mut held = false;
        let mut decided = false;
        let reply = loop {
            if let Some(v) = agent.session.wait(id, Duration::from_millis(100))? {
                break classify(&v);
            }
            if Instant::now() > deadline {
                return Err(anyhow!("{tool}: no answer within {limit:?}"));
            }
            if decided {
                continue;
            }
            let Some(pending) = self.pending_approval(&agent.name) else {
                continue;
            };
            if self.env.interactive {
                if !held {
                    eprintln!(
                        "\n{} wants to {tool}: held for a human ({pending}). Decide on the web \
                         page or with\n  AIRLOCK_TOKEN={} airlock approvals approve|deny {pending} \
                         --config {} --as {APPROVER}\n",
                        agent.name,
                        self.env.token,
                        self.env.config_arg()
                    );
                }
                held = true;
                continue;
            }
            held = true;
            let (word, comment) = match verdict {
                Verdict::Approve => ("approve", "reviewed: fine to publish"),
                Verdict::Deny => ("deny", "reviewed: must not be published"),
            };
            let out = self.env.as_human(&[
                "approvals",
                word,
                &pending,
                "--comment",
                comment,
                "--config",
                &self.env.config_arg(),
                "--as",
                APPROVER,
            ])?;
            if !out.status.success() {
                return Err(anyhow!(
                    "airlock approvals {word} {pending} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            decided = true;
        };
        // A held call that went through was approved by a human (whoever decided).
        if held && reply.is_ok() {
            self.signed_off += 1;
        }
        self.note(agent, tool, &args, &reply);
        Ok(reply)
    }

    /// The id of a pending approval for `agent`, if the approvals service has one.
    fn pending_approval(&self, agent: &str) -> Option<String> {
        let out = self
            .env
            .as_human(&[
                "approvals",
                "list",
                "--json",
                "--agent",
                agent,
                "--config",
                &self.env.config_arg(),
            ])
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        let items = list
            .as_array()
            .or_else(|| list.get("approvals").and_then(Value::as_array))?;
        items
            .iter()
            .find(|a| {
                a.get("agent").and_then(Value::as_str) == Some(agent)
                    && a.get("state").and_then(Value::as_str) == Some("pending")
            })
            .and_then(|a| a.get("id").and_then(Value::as_str).map(str::to_owned))
    }

    /// The human says stop to `agent`. Without Airlock the words reach only the agent, which
    /// ignores them; with Airlock `human` runs `airlock kill`. The company clock at that moment
    /// is the stop time damage is measured against. With `--interactive` a person runs the kill,
    /// and the stop time is when their kill is in the store (see [`Ctx::pause`]).
    pub(crate) fn human_stop(&mut self, agent: &str, human: &str) -> anyhow::Result<()> {
        let outcome = match self.mode {
            Mode::Without => "said in the chat; nothing can enforce it".to_owned(),
            Mode::With if self.env.interactive => {
                eprintln!(
                    "\nStop {agent} now, from the web page or with\n  AIRLOCK_TOKEN={} airlock kill \
                     --agent {agent} --config {} --as {human}\n",
                    self.env.token,
                    self.env.config_arg()
                );
                self.awaiting_kill = Some(agent.to_owned());
                "asked a person to kill it".to_owned()
            }
            Mode::With => {
                let out = self.env.as_human(&[
                    "kill",
                    "--agent",
                    agent,
                    "--reason",
                    "stop: it is deleting mail I need",
                    "--config",
                    &self.env.config_arg(),
                    "--as",
                    human,
                ])?;
                if !out.status.success() {
                    return Err(anyhow!(
                        "airlock kill failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
        };
        // The stop time; with a person still to act, [`Ctx::pause`] moves it to their kill.
        self.stop_seq = Some(load_state(&self.state)?.seq);
        self.steps.push(Step {
            agent: human.to_owned(),
            action: format!("stop {agent}"),
            outcome,
        });
        Ok(())
    }

    /// The agent's pause between steps (a model thinking). While a person is asked to kill the
    /// agent it is 3 s, so they have time to react, and the moment their kill is in the store
    /// becomes the stop time.
    pub(crate) fn pause(&mut self, base: std::time::Duration) -> anyhow::Result<()> {
        let Some(agent) = self.awaiting_kill.clone() else {
            std::thread::sleep(base);
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.kill_in_force(&agent) {
                self.stop_seq = Some(load_state(&self.state)?.seq);
                self.awaiting_kill = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Whether `airlock status` shows a kill of `agent` (or of everything).
    fn kill_in_force(&self, agent: &str) -> bool {
        let Ok(out) = self
            .env
            .as_human(&["status", "--json", "--config", &self.env.config_arg()])
        else {
            return false;
        };
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        status
            .get("kills")
            .and_then(Value::as_array)
            .is_some_and(|kills| {
                kills.iter().any(|k| {
                    let scope = k.pointer("/target/scope").and_then(Value::as_str);
                    let target = k.pointer("/target/target").and_then(Value::as_str);
                    scope == Some("all") || (scope == Some("agent") && target == Some(agent))
                })
            })
    }
}

/// Runs `script` once in `mode` and measures what it did.
pub(crate) fn run_once(
    env: &Env,
    mode: Mode,
    scenario: &'static str,
    script: fn(&mut Ctx) -> anyhow::Result<()>,
) -> anyhow::Result<RunResult> {
    let mut ctx = Ctx::new(env, mode, scenario);
    script(&mut ctx).with_context(|| format!("scenario {scenario} ({mode:?} Airlock)"))?;
    let before = seed_state();
    let after = load_state(&ctx.state)?;
    let damage = measure(&before, &after, &Window::review(before.seq, ctx.stop_seq));
    Ok(RunResult {
        mode,
        damage,
        signed_off_posts: ctx.signed_off,
        stop_seq: ctx.stop_seq,
        state_file: ctx.state.clone(),
        steps: ctx.steps,
    })
}
