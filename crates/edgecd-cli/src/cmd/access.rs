//! People and access on a running server: `edgecd token create|list|rotate|revoke` (named
//! API tokens with roles, secrets shown once) and `edgecd audit` (who changed what, when,
//! from where). Both need an admin token (`--token`/`EDGECD_TOKEN`).
use super::admin::Remote;
use edgecd_server::audit::AuditRecord;
use edgecd_server::auth::{ApiTokenInfo, ApiTokenSecret, CreateApiToken, Role};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a named API token with a role; its secret is printed once.
    Create {
        /// A name to know it by in `token list` and the audit log (e.g. ci, alice).
        name: String,
        /// viewer (reads), deployer (publish, deploy, rollouts, labels, enrollment tokens),
        /// approver (also approves rollout steps) or admin (also keys, tokens, audit log,
        /// device revocation/deletion, blob GC).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the API tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Give a token a new secret (printed once); the old one stops working at once.
    Rotate {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token: it is refused from now on (the last admin token cannot be revoked).
    Revoke {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only records newer than this: a duration (30m, 2h, 7d) or a time (2026-12-03T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this token's records.
    #[arg(long = "by")]
    pub by: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?}: use viewer, deployer, approver or admin"))
}

fn when(secs: i64) -> String {
    u64::try_from(secs)
        .map(|s| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
            .to_string()
        })
        .unwrap_or_default()
}

fn show_secret(t: &ApiTokenSecret, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        return crate::output::print_json(t);
    }
    crate::outln!(
        "{what} API token {:?} with role {} (shown once; store it now):",
        t.name,
        t.role
    );
    crate::outln!("{}", t.token);
    Ok(())
}

fn path_segment(s: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c)),
        "token name {s:?}: use 1-64 characters of [A-Za-z0-9._@-]"
    );
    Ok(s)
}

pub fn run_token(c: TokenCommand) -> anyhow::Result<ExitCode> {
    match c {
        TokenCommand::Create {
            name,
            role,
            json,
            remote,
        } => {
            let t: ApiTokenSecret = remote.client()?.send(
                "POST",
                "/api/v1/admin/tokens",
                &CreateApiToken { name, role },
            )?;
            show_secret(&t, json, "created")?;
        }
        TokenCommand::List { json, remote } => {
            let list: Vec<ApiTokenInfo> = remote.client()?.get("/api/v1/admin/tokens")?;
            if json {
                crate::output::print_json(&list)?;
            } else {
                for t in list {
                    let state = match (t.revoked, t.rotated) {
                        (Some(r), _) => format!("revoked {}", when(r)),
                        (None, Some(r)) => format!("rotated {}", when(r)),
                        (None, None) => "active".into(),
                    };
                    crate::outln!(
                        "{:<24} {:<9} created {}  {state}",
                        t.name,
                        t.role,
                        when(t.created)
                    );
                }
            }
        }
        TokenCommand::Rotate { name, json, remote } => {
            let path = format!("/api/v1/admin/tokens/{}/rotate", path_segment(&name)?);
            let t: ApiTokenSecret = remote
                .client()?
                .send("POST", &path, &serde_json::json!({}))?;
            show_secret(&t, json, "rotated")?;
        }
        TokenCommand::Revoke { name, json, remote } => {
            let path = format!("/api/v1/admin/tokens/{}/revoke", path_segment(&name)?);
            let t: ApiTokenInfo = remote
                .client()?
                .send("POST", &path, &serde_json::json!({}))?;
            if json {
                crate::output::print_json(&t)?;
            } else {
                crate::outln!("revoked API token {:?} (role {})", t.name, t.role);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a duration back from now or an RFC 3339 time; unix milliseconds.
fn since_ms(s: &str) -> anyhow::Result<i64> {
    let t = match humantime::parse_duration(s) {
        Ok(d) => std::time::SystemTime::now()
            .checked_sub(d)
            .unwrap_or(std::time::UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            anyhow::anyhow!(
                "--since {s:?}: give a duration (30m, 2h, 7d) or a time (2026-12-03T10:00:00Z)"
            )
        })?,
    };
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

pub fn run_audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=10_000).contains(&a.limit),
        "--limit {}: use 1 to 10000",
        a.limit
    );
    let mut path = format!("/api/v1/admin/audit?limit={}", a.limit);
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={}", since_ms(s)?));
    }
    if let Some(t) = &a.by {
        path.push_str(&format!("&token={}", path_segment(t)?));
    }
    let records: Vec<AuditRecord> = a.remote.client()?.get(&path)?;
    if a.json {
        crate::output::print_json(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in records {
        let at = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at_ms.max(0) as u64),
        );
        let summary = r.summary.map(|s| format!("  {s}")).unwrap_or_default();
        let from = match (&r.peer, &r.forwarded_for) {
            (Some(p), Some(f)) => format!("{p} (forwarded for {f})"),
            (Some(p), None) => p.clone(),
            (None, _) => "-".into(),
        };
        crate::outln!(
            "{at}  {:<16} {:<6} {} {}  from {from}{summary}",
            r.token,
            r.method,
            r.path,
            r.status
        );
    }
    Ok(ExitCode::SUCCESS)
}
