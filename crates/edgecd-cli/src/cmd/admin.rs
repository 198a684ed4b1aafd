//! Admin commands that talk to a running server: `keys`, `device`, `deploy` (and, in
//! `remote`, `release publish|list`). Server and token come from `--server`/`--token` or
//! `EDGECD_SERVER`/`EDGECD_TOKEN`; `--ca-cert` pins the server's CA for HTTPS.
use anyhow::Context as _;
use edgecd_agent::admin::AdminClient;
use edgecd_api::protocol::{CreateTokenRequest, DeployRequest, DeviceInfo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "remote.rs"]
pub mod remote;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Server URL, e.g. https://edgecd.example:8443.
    #[arg(long, env = "EDGECD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token: the first start's admin token (DATA/admin-token) or one from `edgecd token
    /// create` with the role the command needs (see the README's roles table).
    #[arg(long, env = "EDGECD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// PEM CA certificate the server's certificate must chain to.
    #[arg(long, env = "EDGECD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl Remote {
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let ca = match &self.ca_cert {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("reading CA certificate {}", p.display()))?,
            ),
            None => None,
        };
        AdminClient::new(&self.server, &self.token, ca.as_deref()).map_err(anyhow::Error::from)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Trust a CI public key (PEM) to sign releases.
    Trust {
        /// The public key file, e.g. release.pub.
        key: PathBuf,
        /// A name to remember it by.
        #[arg(long)]
        name: Option<String>,
        /// Print the trusted key as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the trusted release keys.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List devices with what they really run.
    List {
        /// Only devices whose labels match all of these (`k=v[,k=v]`, repeatable).
        #[arg(long = "selector", value_delimiter = ',', value_parser = parse_label)]
        selector: Vec<(String, String)>,
        /// Only devices in this state: a phase (idle, downloading, verifying, staged, selfTest,
        /// activating, trial, committed, rollingBack), online, offline (no check-in for 3
        /// intervals) or revoked.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one device.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Set labels (`k=v`; `k=` removes a label).
    Label {
        id: String,
        #[arg(required = true, value_parser = parse_label_edit)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a device: its credential is refused from now on.
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a device's recent logs (the agent's and the runtime's, secrets redacted),
    /// fetched from the device at its next check-in. Needs role deployer.
    Logs(super::troubleshoot::LogsArgs),
    /// Diagnose a device: inventory, slots, last install attempts, free disk, temperature
    /// history and the runtime's health in one report (a fresh report from the device at
    /// its next check-in, joined with what the server knows). Needs role deployer.
    Diagnose(super::troubleshoot::DiagnoseArgs),
    /// Delete a device: it, its credential and its assignment are removed (it must enroll
    /// again to come back); the deletion stays in the server's event log.
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an enrollment token.
    Create {
        /// Labels every device enrolled with it gets (`k=v`, repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Validity, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expires: u64,
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `edgecd deploy APP@VERSION [--selector k=v…]`: assign a release directly to the matching
/// devices that can run it (incompatible ones are listed and skipped).
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The release, APP@VERSION.
    pub release: String,
    /// Devices whose labels match all of these (`k=v`, repeatable). Without one the whole
    /// fleet is changed, which needs confirmation (or --yes).
    #[arg(long = "selector", value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
    #[command(flatten)]
    pub change: ChangeArgs,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of a fleet change (`deploy`, `rollback`).
#[derive(Debug, Clone, clap::Args)]
pub struct ChangeArgs {
    /// Show what would be assigned and skipped, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before changing every device (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[arg(long)]
    pub json: bool,
}

/// Runs a deployment for `deploy` and `rollback`. A change without a selector is
/// fleet-wide: on a terminal it shows the plan (a dry run) and asks; without a terminal it
/// needs `--yes`. `what` names the change in messages ("deploy", "rollback").
pub fn deploy_change(
    remote: &Remote,
    req: &DeployRequest,
    app_scope: bool,
    c: &ChangeArgs,
    what: &str,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    let client = remote.client()?;
    let release = format!("{}@{}", req.app, req.version);
    let scope = if app_scope {
        format!("every device of {}", req.app)
    } else {
        "every device".to_string()
    };
    if !c.dry_run && !c.yes && req.selector.is_empty() {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "{what} without --selector changes {scope}: pass --yes to confirm (or --dry-run to see what it would do, or --selector k=v to narrow it)"
            );
        }
        let plan = client.deploy_with(req, true, app_scope)?;
        print_deploy(&plan, &release, c.json)?;
        eprint!(
            "{what}: assign {release} to these {} devices ({scope})? [y/N] ",
            plan.assigned.len()
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("{what} cancelled: nothing was assigned");
        }
    }
    let r = client.deploy_with(req, c.dry_run, app_scope)?;
    print_deploy(&r, &release, c.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_deploy(
    r: &edgecd_api::protocol::DeployResponse,
    release: &str,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return crate::output::print_json(r);
    }
    let verb = if r.dry_run {
        "would assign"
    } else {
        "assigned"
    };
    for d in &r.assigned {
        crate::outln!(
            "{verb} {release} to {} (assignment version {})",
            d.device_id,
            d.assignment_version
        );
    }
    for s in &r.skipped {
        crate::outln!(
            "skipped {}: cannot run {release}: {}",
            s.device_id,
            s.reason
        );
    }
    crate::outln!(
        "{}{} devices {verb}, {} skipped as incompatible",
        if r.dry_run {
            "dry run, nothing changed: "
        } else {
            ""
        },
        r.assigned.len(),
        r.skipped.len()
    );
    Ok(())
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !v.is_empty() && edgecd_api::protocol::valid_label(k, v) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "{s:?} must be k=v with 1-63 characters of [A-Za-z0-9._-] (keys may contain /)"
        )),
    }
}

fn parse_label_edit(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, "")) if edgecd_api::protocol::valid_label(k, "") => {
            Ok((k.to_string(), String::new()))
        }
        _ => parse_label(s),
    }
}

/// Parses `90s`, `30m`, `24h`, `7d` (or plain seconds) into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))
}

fn ago(t: Option<u64>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match t {
        None => "never".into(),
        Some(t) => format!("{}s ago", now.saturating_sub(t)),
    }
}

/// Every app the device runs, `APP@VERSION (SLOT_WORDslot)` joined with " + " (several apps
/// side by side), or "-".
pub(crate) fn running_summary(
    status: Option<&edgecd_api::protocol::DeviceStatus>,
    slot_word: &str,
) -> String {
    status
        .map(|s| {
            s.running_all()
                .iter()
                .map(|r| format!("{}@{} ({slot_word}{})", r.app, r.version, r.slot))
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

fn print_device_row(d: &DeviceInfo) {
    let running = running_summary(d.status.as_ref(), "");
    let phase = d
        .status
        .as_ref()
        .map_or("-".to_string(), |s| s.phase.to_string());
    let outcome = d
        .status
        .as_ref()
        .and_then(|s| s.last_outcome.as_ref())
        .map_or("-".to_string(), |o| {
            if o.reason.is_empty() {
                format!("{:?}", o.kind)
            } else {
                format!("{:?}: {}", o.kind, o.reason)
            }
        });
    let labels = d
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let host = d
        .inventory
        .as_ref()
        .and_then(|i| i.hostname.as_deref())
        .unwrap_or("-");
    let assigned = match d.assigned_all().join(" + ") {
        a if a.is_empty() => "-".to_string(),
        a => a,
    };
    crate::outln!(
        "{:<22} {:<20} {:<28} {:<12} {:<24} {:<10} {}{}  {}",
        d.id,
        host,
        running,
        phase,
        assigned,
        ago(d.last_seen),
        if d.revoked { "REVOKED " } else { "" },
        labels,
        outcome
    );
}

pub fn run_keys(c: KeysCommand) -> anyhow::Result<ExitCode> {
    match c {
        KeysCommand::Trust {
            key,
            name,
            json,
            remote,
        } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            if let Some(label) = edgecd_sign::private_key_label(&pem) {
                anyhow::bail!(
                    "{} is a private key (`{label}`): nothing was sent; pass the public key file instead (e.g. {}, `-----BEGIN PUBLIC KEY-----`)",
                    key.display(),
                    key.with_extension("pub").display()
                );
            }
            let k = remote
                .client()?
                .trust_key(&pem, name.as_deref())
                .context("trusting the key")?;
            if json {
                crate::output::print_json(&k)?;
            } else {
                crate::outln!("trusted release key {}", k.hint);
            }
        }
        KeysCommand::List { json, remote } => {
            let keys = remote.client()?.list_keys()?;
            if json {
                crate::output::print_json(&keys)?;
            } else {
                for k in keys {
                    crate::outln!("{}  {}", k.hint, k.name.unwrap_or_default());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_device(c: DeviceCommand) -> anyhow::Result<ExitCode> {
    match c {
        DeviceCommand::Token(TokenCommand::Create {
            labels,
            expires,
            max_uses,
            json,
            remote,
        }) => {
            let t = remote.client()?.create_token(&CreateTokenRequest {
                labels: labels.into_iter().collect(),
                expires_in_secs: Some(expires),
                max_uses: Some(max_uses),
            })?;
            if json {
                crate::output::print_json(&t)?;
            } else {
                crate::outln!("{}", t.token);
            }
        }
        DeviceCommand::List {
            selector,
            state,
            json,
            remote,
        } => {
            let devices = remote
                .client()?
                .list_devices_where(&selector.into_iter().collect(), state.as_deref())?;
            if json {
                crate::output::print_json(&devices)?;
            } else {
                crate::outln!(
                    "{:<22} {:<20} {:<28} {:<12} {:<24} {:<10} LABELS  LAST OUTCOME",
                    "ID",
                    "HOSTNAME",
                    "RUNNING",
                    "PHASE",
                    "ASSIGNED",
                    "SEEN"
                );
                devices.iter().for_each(print_device_row);
            }
        }
        DeviceCommand::Show { id, json, remote } => {
            let d = remote.client()?.show_device(&id)?;
            if json {
                crate::output::print_json(&d)?;
            } else {
                crate::outln!("{}", serde_json::to_string_pretty(&d)?);
            }
        }
        DeviceCommand::Label {
            id,
            labels,
            json,
            remote,
        } => {
            let d = remote
                .client()?
                .label_device(&id, labels.into_iter().collect::<BTreeMap<_, _>>())?;
            if json {
                crate::output::print_json(&d)?;
                return Ok(ExitCode::SUCCESS);
            }
            crate::outln!(
                "{}: {}",
                d.id,
                d.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        DeviceCommand::Revoke { id, json, remote } => {
            let d = remote.client()?.revoke_device(&id)?;
            if json {
                crate::output::print_json(&d)?;
            } else {
                crate::outln!("revoked {id}");
            }
        }
        DeviceCommand::Logs(a) => return super::troubleshoot::logs(a),
        DeviceCommand::Diagnose(a) => return super::troubleshoot::diagnose(a),
        DeviceCommand::Delete { id, json, remote } => {
            let d = remote
                .client()?
                .delete_device(&id)
                .with_context(|| format!("deleting device {id}"))?;
            if json {
                crate::output::print_json(&d)?;
            } else {
                crate::outln!("deleted {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_deploy(a: DeployArgs) -> anyhow::Result<ExitCode> {
    let (app, version) = a
        .release
        .split_once('@')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("release {:?} must look like APP@VERSION", a.release))?;
    let req = DeployRequest {
        app: app.to_string(),
        version: version.to_string(),
        selector: a.selector.into_iter().collect(),
    };
    deploy_change(&a.remote, &req, false, &a.change, "deploy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_labels() {
        assert_eq!(parse_duration("24h"), Ok(86400));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("7d"), Ok(604800));
        assert_eq!(parse_duration("90"), Ok(90));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            parse_label("site=berlin"),
            Ok(("site".into(), "berlin".into()))
        );
        assert!(parse_label("site").is_err());
        assert_eq!(
            parse_label_edit("site="),
            Ok(("site".into(), String::new()))
        );
    }
}
