//! `edgecd rollout start|status|list|promote|pause|resume|abort|approve|rollback|history` and
//! `edgecd rollback APP --to VERSION`: progressive rollouts on a server (verbs as in Argo
//! Rollouts).
use super::admin::Remote;
use crate::output::print_json;
use anyhow::Context as _;
use edgecd_api::protocol::DeployRequest;
use edgecd_rollout::engine::{AuditRecord, Phase};
use edgecd_rollout::gates::{GateResult, Verdict};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout from a YAML spec (see the README for its fields).
    Start {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Release to roll back to (default: what most selected devices run now).
        #[arg(long)]
        baseline: Option<String>,
        /// Roll out to this fleet's devices (the spec gives no selector); the fleet takes the
        /// release when the rollout completes.
        #[arg(long)]
        fleet: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a rollout (or all): step, cohort, each gate's value vs threshold, why it holds.
    Status {
        id: Option<String>,
        /// Refresh until the rollout finishes.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One line per rollout, newest first: id, release, baseline, phase, step, cohort.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Skip the rest of the current step.
    Promote(IdArgs),
    Pause(IdArgs),
    Resume(IdArgs),
    /// Stop and send every device that got the release back to the baseline.
    Abort(IdArgs),
    /// Pass a manual approval step.
    Approve(IdArgs),
    /// Send every device that got the release back to the baseline: aborts a running
    /// rollout, and also works once it completed (unless a newer rollout of the app runs).
    Rollback(IdArgs),
    /// Every decision with the numbers behind it.
    History {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    pub id: String,
    /// Print the rollout's new status as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `edgecd rollback APP --to VERSION`: assign an earlier version to the devices of APP
/// (those assigned it or reporting it running) — never to devices of other apps.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The app to roll back.
    pub app: String,
    /// The version to go back to.
    #[arg(long = "to")]
    pub to: String,
    /// Only devices of APP with these labels (default: every device of APP, which needs
    /// confirmation or --yes).
    #[arg(long = "selector", value_name = "K=V")]
    pub selector: Vec<String>,
    #[command(flatten)]
    pub change: super::admin::ChangeArgs,
    #[command(flatten)]
    pub remote: Remote,
}

pub fn run(c: RolloutCommand) -> anyhow::Result<ExitCode> {
    match c {
        RolloutCommand::Start {
            file,
            baseline,
            fleet,
            json,
            remote,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let spec: edgecd_rollout::RolloutSpec = serde_yaml::from_str(&text)
                .with_context(|| format!("parsing rollout spec {}", file.display()))?;
            spec.validate()?;
            if let Some(f) = &fleet
                && !spec.selector.is_empty()
            {
                anyhow::bail!(
                    "{}: the rollout targets fleet {f}, whose selector it uses: remove the spec's selector",
                    file.display()
                );
            }
            let body = serde_json::json!({"spec": spec, "baseline": baseline, "fleet": fleet});
            let st: Value = remote
                .client()?
                .send("POST", "/api/v1/admin/rollouts", &body)?;
            if json {
                print_json(&st)?;
            } else {
                crate::outln!(
                    "started rollout {} of {}",
                    st["rollout"]["id"].as_str().unwrap_or("?"),
                    st["rollout"]["spec"]["release"].as_str().unwrap_or("?")
                );
                print_status(&st);
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Status {
            id,
            watch,
            json,
            remote,
        } => {
            let client = remote.client()?;
            let Some(id) = id else {
                let all: Vec<Value> = client.get("/api/v1/admin/rollouts")?;
                if json {
                    print_json(&all)?;
                } else {
                    for st in &all {
                        print_status(st);
                        crate::outln!();
                    }
                    if all.is_empty() {
                        crate::outln!("no rollouts");
                    }
                }
                return Ok(ExitCode::SUCCESS);
            };
            loop {
                let st: Value = client.get(&format!("/api/v1/admin/rollouts/{id}"))?;
                if json {
                    print_json(&st)?;
                } else {
                    print_status(&st);
                }
                let phase: Phase = serde_json::from_value(st["rollout"]["state"]["phase"].clone())
                    .unwrap_or(Phase::Progressing);
                if !watch || matches!(phase, Phase::Completed | Phase::Aborted) {
                    // With --watch the exit code says how it ended (3: aborted), like a CI gate.
                    return Ok(if watch && phase == Phase::Aborted {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    });
                }
                std::thread::sleep(std::time::Duration::from_secs(2));
                crate::outln!();
            }
        }
        RolloutCommand::List { json, remote } => {
            let all: Vec<Value> = remote.client()?.get("/api/v1/admin/rollouts")?;
            if json {
                print_json(&all)?;
            } else {
                crate::outln!(
                    "{:<24} {:<32} {:<32} {:<12} {:<6} RUNNING/COHORT",
                    "ID",
                    "RELEASE",
                    "BASELINE",
                    "PHASE",
                    "STEP"
                );
                all.iter().for_each(print_list_row);
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Promote(a) => command(a, "promote"),
        RolloutCommand::Pause(a) => command(a, "pause"),
        RolloutCommand::Resume(a) => command(a, "resume"),
        RolloutCommand::Abort(a) => command(a, "abort"),
        RolloutCommand::Rollback(a) => command(a, "rollback"),
        RolloutCommand::Approve(a) => command(a, "approve"),
        RolloutCommand::History { id, json, remote } => {
            let h: Vec<AuditRecord> = remote
                .client()?
                .get(&format!("/api/v1/admin/rollouts/{id}/history"))?;
            if json {
                print_json(&h)?;
            } else {
                for r in &h {
                    crate::outln!(
                        "{}  step {}  {:<10} {}",
                        edgecd_bundle::release::rfc3339_utc(r.at.max(0) as u64),
                        r.step + 1,
                        r.kind,
                        r.message
                    );
                    for g in &r.gates {
                        crate::outln!(
                            "      {}",
                            gate_line(&serde_json::to_value(g).unwrap_or_default())
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn command(a: IdArgs, verb: &str) -> anyhow::Result<ExitCode> {
    let st: Value = a.remote.client()?.send(
        "POST",
        &format!("/api/v1/admin/rollouts/{}/{verb}", a.id),
        &serde_json::json!({}),
    )?;
    if a.json {
        print_json(&st)?;
    } else {
        crate::outln!("{verb}: ok");
        print_status(&st);
    }
    Ok(ExitCode::SUCCESS)
}

/// One `rollout list` row of a rollout status (the API's `RolloutStatus` JSON).
fn print_list_row(st: &Value) {
    let r = &st["rollout"];
    let s = &r["state"];
    let steps = r["spec"]["steps"].as_array().map_or(0, Vec::len);
    let phase = match s["stopCause"].as_str() {
        Some(cause) => format!("{} ({cause})", s["phase"].as_str().unwrap_or("?")),
        None => s["phase"].as_str().unwrap_or("?").to_string(),
    };
    let step = format!("{}/{steps}", s["step"].as_u64().unwrap_or(0) + 1);
    crate::outln!(
        "{:<24} {:<32} {:<32} {:<12} {:<6} {}/{}",
        r["id"].as_str().unwrap_or("?"),
        r["spec"]["release"].as_str().unwrap_or("?"),
        r["baseline"].as_str().unwrap_or("none"),
        phase,
        step,
        st["runningRelease"],
        s["cohort"].as_array().map_or(0, Vec::len),
    );
}

/// One gate result: its value with the interval at the rollout's confidence (and the ratio
/// to the baseline with its interval), samples, verdict and why.
fn gate_line(g: &Value) -> String {
    let verdict = g["verdict"]["verdict"].as_str().unwrap_or("?");
    let why = g["verdict"]["why"].as_str().unwrap_or("");
    let (name, shown) = match serde_json::from_value::<GateResult>(g.clone()) {
        Ok(r) => (r.name(), r.shown_value()),
        Err(_) => (g["gate"].as_str().unwrap_or("?").to_string(), "-".into()),
    };
    let mut line = format!(
        "{name:<40} {shown}  samples {}  {verdict} {why}",
        g["samples"]
    );
    if let Some(q) = g["query"].as_str() {
        line.push_str(&format!("\n        query: {q}"));
    }
    line
}

/// Prints a rollout status (the API's `RolloutStatus` JSON).
pub fn print_status(st: &Value) {
    let r = &st["rollout"];
    let s = &r["state"];
    let steps = r["spec"]["steps"].as_array().map_or(0, Vec::len);
    crate::outln!(
        "rollout {}  {}  (baseline {})",
        r["id"].as_str().unwrap_or("?"),
        r["spec"]["release"].as_str().unwrap_or("?"),
        r["baseline"].as_str().unwrap_or("none")
    );
    match s["stopCause"].as_str() {
        Some(cause) => crate::outln!(
            "  phase   {} (stopped by {cause})",
            s["phase"].as_str().unwrap_or("?")
        ),
        None => crate::outln!("  phase   {}", s["phase"].as_str().unwrap_or("?")),
    }
    let step = s["step"].as_u64().unwrap_or(0) as usize;
    if step >= steps {
        crate::outln!("  step    {steps}/{steps} (all steps done)");
    } else {
        crate::outln!(
            "  step    {}/{} {}",
            step + 1,
            steps,
            st["stepDescription"].as_str().unwrap_or("")
        );
    }
    crate::outln!(
        "  cohort  {} assigned, {} running the release, {} eligible, {} incompatible",
        s["cohort"].as_array().map_or(0, Vec::len),
        st["runningRelease"],
        st["eligible"],
        st["incompatible"].as_array().map_or(0, Vec::len)
    );
    if let Some(groups) = s["coveredGroups"].as_array().filter(|g| g.len() > 1) {
        let names: Vec<&str> = groups.iter().filter_map(Value::as_str).collect();
        crate::outln!("  groups  {} covered: {}", names.len(), names.join(", "));
    }
    if let Some(groups) = s["excludedGroups"].as_array().filter(|g| !g.is_empty()) {
        let names: Vec<&str> = groups.iter().filter_map(Value::as_str).collect();
        crate::outln!("  exclude {}", names.join(", "));
    }
    let gates = s["lastGates"].as_array().map_or(&[][..], Vec::as_slice);
    // Gates evaluated in an earlier step (the current one has not evaluated yet) are stale.
    if !gates.is_empty() && s["lastEvaluationAt"].is_null() {
        crate::outln!("  gates   (stale: from an earlier step's last evaluation)");
    }
    for g in gates {
        crate::outln!("  gate    {}", gate_line(g));
    }
    if let Some(reason) = s["reason"].as_str() {
        crate::outln!("  reason  {reason}");
    }
    for i in st["incompatible"].as_array().into_iter().flatten().take(5) {
        crate::outln!(
            "  skip    {} ({})",
            i[0].as_str().unwrap_or("?"),
            i[1].as_str().unwrap_or("?")
        );
    }
    let _ = Verdict::Pass;
}

pub fn rollback(a: RollbackArgs) -> anyhow::Result<ExitCode> {
    let req = DeployRequest {
        app: a.app.clone(),
        version: a.to.clone(),
        selector: super::bundle::parse_labels(&a.selector)?,
    };
    let code = super::admin::deploy_change(&a.remote, &req, true, &a.change, "rollback")?;
    if !a.change.json && !a.change.dry_run {
        crate::outln!("rolled {} back to {}", a.app, a.to);
    }
    Ok(code)
}
