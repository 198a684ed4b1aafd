//! `edgecd fleet apply|diff|status|list|delete`: fleets as desired state (see the README's
//! Fleets section). A fleet file is parsed and validated here before anything is sent; the
//! server checks the rest (published releases, notification channels) before it changes
//! anything.
use super::admin::Remote;
use crate::output::print_json;
use anyhow::Context as _;
use edgecd_server::fleets::{FleetSpec, FleetStatus, Standing};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Store a fleet (replacing one of the same name): the controller then keeps its devices
    /// on its release. Prints what changes per device.
    Apply(FileArgs),
    /// What applying a fleet file would change, per device (nothing is stored).
    Diff(FileArgs),
    /// Per device: converged, converging, blocked or left, with why.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One line per fleet: name, origin, selector, apps, devices per state.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a fleet's desired state (its devices keep what they were assigned).
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The fleet file (YAML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print the fleet's status (per device, with the change) as JSON.
    #[arg(long)]
    pub json: bool,
    /// `apply`: do not ask before storing a fleet without a selector, which places its apps
    /// on every device, now and enrolled later (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// Reads and validates a fleet file.
pub fn load(file: &Path) -> anyhow::Result<FleetSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec: FleetSpec = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing fleet file {}", file.display()))?;
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(spec)
}

/// A fleet name as one URL path segment.
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b':'
            | b'='
            | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn run(c: FleetCommand) -> anyhow::Result<ExitCode> {
    match c {
        FleetCommand::Apply(a) => send(a, false),
        FleetCommand::Diff(a) => send(a, true),
        FleetCommand::Status { name, json, remote } => {
            let st: FleetStatus = remote
                .client()?
                .get(&format!("/api/v1/admin/fleets/{}", segment(&name)))?;
            if json {
                print_json(&st)?;
            } else {
                print_status(&st);
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::List { json, remote } => {
            let all: Vec<FleetStatus> = remote.client()?.get("/api/v1/admin/fleets")?;
            if json {
                print_json(&all)?;
            } else if all.is_empty() {
                crate::outln!("no fleets");
            } else {
                for st in &all {
                    crate::outln!(
                        "{}  ({})  selector {}  {}  {}",
                        st.name,
                        st.origin.as_str(),
                        selector(&st.spec),
                        apps(st),
                        counts(st)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Delete { name, json, remote } => {
            let st: FleetStatus = remote
                .client()?
                .delete(&format!("/api/v1/admin/fleets/{}", segment(&name)))?;
            if json {
                print_json(&st)?;
            } else {
                crate::outln!(
                    "deleted fleet {name}: its {} devices keep what they were assigned",
                    st.devices.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn send(a: FileArgs, dry_run: bool) -> anyhow::Result<ExitCode> {
    let spec = load(&a.file)?;
    let client = a.remote.client()?;
    let post = |dry_run: bool| -> anyhow::Result<FleetStatus> {
        let path = if dry_run {
            "/api/v1/admin/fleets?dryRun=true"
        } else {
            "/api/v1/admin/fleets"
        };
        Ok(client.send("POST", path, &spec)?)
    };
    if !dry_run && !a.yes && spec.selector.is_empty() {
        // No selector: every device, now and enrolled later. As `deploy` without one, it
        // shows the plan and asks on a terminal, and needs --yes without one.
        use std::io::IsTerminal as _;
        let scope = format!(
            "fleet {} has no selector: it places its apps on every device, now and enrolled later",
            spec.name
        );
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "{scope}: pass --yes to confirm (or `edgecd fleet diff -f {}` to see what it would do, or give it a selector)",
                a.file.display()
            );
        }
        print_result(&post(true)?, true, a.json)?;
        eprint!("{scope}. Apply it? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("fleet apply cancelled: nothing was stored");
        }
    }
    print_result(&post(dry_run)?, dry_run, a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what applying (or, `dry_run`, diffing) a fleet did per device.
fn print_result(st: &FleetStatus, dry_run: bool, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(st);
    }
    for n in &st.notes {
        crate::outln!("{n}");
    }
    let changes: Vec<_> = st.devices.iter().filter(|e| e.change.is_some()).collect();
    let verb = if dry_run { "would assign" } else { "assigns" };
    for e in &changes {
        crate::outln!(
            "  {}: {}",
            e.device,
            e.change.as_deref().unwrap_or_default()
        );
    }
    for e in st.devices.iter().filter(|e| e.state == Standing::Blocked) {
        crate::outln!("  {}: blocked: {}", e.device, e.why);
    }
    if dry_run {
        crate::outln!(
            "fleet {}: {verb} {} of {} devices (nothing changed: this was a diff)",
            st.name,
            changes.len(),
            st.devices.len()
        );
    } else {
        crate::outln!(
            "applied fleet {}: the controller {verb} {} of {} devices; `edgecd fleet status {}` follows them",
            st.name,
            changes.len(),
            st.devices.len(),
            st.name
        );
    }
    Ok(())
}

fn selector(spec: &FleetSpec) -> String {
    if spec.selector.is_empty() {
        return "(all devices)".into();
    }
    spec.selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn apps(st: &FleetStatus) -> String {
    st.apps
        .iter()
        .map(|a| match (&a.current, &a.rollout) {
            (_, Some(r)) => format!("{} (rollout {r})", a.placed),
            (Some(c), None) if *c != a.placed => format!("{} (held at {c})", a.placed),
            _ => a.placed.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts(st: &FleetStatus) -> String {
    if st.counts.is_empty() {
        return "no devices".into();
    }
    st.counts
        .iter()
        .map(|(s, n)| format!("{n} {}", standing(*s)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn standing(s: Standing) -> &'static str {
    match s {
        Standing::Converged => "converged",
        Standing::Converging => "converging",
        Standing::Blocked => "blocked",
        Standing::Left => "left",
    }
}

fn print_status(st: &FleetStatus) {
    crate::outln!(
        "fleet {} ({}): selector {}, on_unmatch {}",
        st.name,
        st.origin.as_str(),
        selector(&st.spec),
        match st.spec.on_unmatch {
            edgecd_server::fleets::OnUnmatch::Keep => "keep",
            edgecd_server::fleets::OnUnmatch::Remove => "remove",
        }
    );
    for a in &st.apps {
        crate::outln!(
            "  {}: placed {}, devices held at {}{}",
            a.app,
            a.placed,
            a.current.as_deref().unwrap_or("nothing yet"),
            a.rollout
                .as_deref()
                .map(|r| format!(", rollout {r} running"))
                .unwrap_or_default()
        );
        if let Some(n) = &a.note {
            crate::outln!("    {n}");
        }
    }
    crate::outln!("  {}", counts(st));
    for e in &st.devices {
        crate::outln!("  {:<36} {:<10} {}", e.device, standing(e.state), e.why);
    }
}
