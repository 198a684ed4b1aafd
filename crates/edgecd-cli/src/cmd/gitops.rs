//! `edgecd gitops --repo URL --branch B --path DIR`: fleets from a git repo (see the README's
//! GitOps section). Registers (or updates) the server's GitOps source; `gitops status` shows
//! what the controller last saw, applied and refused, and each git fleet; `gitops disconnect`
//! makes the fleets CLI-managed again. Files named by flags (trusted signers, webhook secret)
//! are read here and sent to the server, which keeps them in its database.
use super::admin::Remote;
use crate::output::print_json;
use anyhow::Context as _;
use edgecd_server::fleets::Standing;
use edgecd_server::gitops::{DEFAULT_STATUS_BRANCH, GitopsSource, GitopsStatus};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct GitopsArgs {
    #[command(subcommand)]
    pub command: Option<GitopsCommand>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The repo: file:///PATH (or a local path) or git://HOST/PATH.
    #[arg(long, required = true)]
    pub repo: Option<String>,
    /// The branch whose head is the desired state.
    #[arg(long, required = true)]
    pub branch: Option<String>,
    /// The directory of fleet files in the repo (`.` for the top).
    #[arg(long, required = true)]
    pub path: Option<String>,
    /// Fetch every N seconds (a webhook fetches at once).
    #[arg(long, default_value_t = 60)]
    pub poll_secs: u64,
    /// OpenSSH allowed-signers file: only commits signed by one of its keys are applied.
    #[arg(long)]
    pub trusted_signers: Option<PathBuf>,
    /// File holding the webhook's HMAC secret (enables POST /api/v1/gitops/webhook).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Where the server pushes status files.
    #[arg(long, default_value = DEFAULT_STATUS_BRANCH)]
    pub status_branch: String,
    /// Print the source's status as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Option<Remote>,
}

#[derive(Debug, clap::Subcommand)]
pub enum GitopsCommand {
    /// Last seen and applied commits, the last refusal (commit, file, what is wrong), the
    /// status push, and each fleet from git with its devices per state.
    Status {
        /// Print it as JSON (the API's answer).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop reconciling the repo: its fleets stay, managed with the CLI again.
    Disconnect {
        /// Print the last status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

pub fn run(a: GitopsArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        Some(GitopsCommand::Status { json, remote }) => {
            let st: GitopsStatus = remote.client()?.get("/api/v1/admin/gitops")?;
            if json {
                print_json(&st)?;
            } else {
                print_status(&st);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(GitopsCommand::Disconnect { json, remote }) => {
            let st: GitopsStatus = remote.client()?.delete("/api/v1/admin/gitops")?;
            if json {
                print_json(&st)?;
            } else {
                crate::outln!(
                    "disconnected {} ({}): its {} fleets are managed with the CLI now",
                    st.repo,
                    st.branch,
                    st.fleets.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => connect(a.connect),
    }
}

fn read(p: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {what} {}", p.display()))
}

fn connect(c: ConnectArgs) -> anyhow::Result<ExitCode> {
    let (Some(repo), Some(branch), Some(path), Some(remote)) = (c.repo, c.branch, c.path, c.remote)
    else {
        anyhow::bail!("give --repo, --branch and --path (or a subcommand: status, disconnect)");
    };
    let source = GitopsSource {
        repo,
        branch,
        path,
        poll_secs: c.poll_secs,
        trusted_signers: match &c.trusted_signers {
            Some(p) => Some(read(p, "trusted signers")?),
            None => None,
        },
        webhook_secret: match &c.webhook_secret_file {
            Some(p) => Some(read(p, "webhook secret")?.trim().to_string()),
            None => None,
        },
        status_branch: c.status_branch,
    };
    source.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let st: GitopsStatus = remote
        .client()?
        .send("POST", "/api/v1/admin/gitops", &source)?;
    if c.json {
        print_json(&st)?;
    } else {
        crate::outln!(
            "connected {} branch {} path {}: the controller fetches it every {} s{}{}; `edgecd gitops status` follows it",
            st.repo,
            st.branch,
            st.path,
            st.poll_secs,
            if st.webhook {
                format!(" and on POST {}/api/v1/gitops/webhook", remote.server)
            } else {
                String::new()
            },
            if st.trusted_signers > 0 {
                format!(
                    ", applying only commits signed by one of {} trusted keys",
                    st.trusted_signers
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(st: &GitopsStatus) {
    let s = &st.state;
    crate::outln!(
        "repo {} branch {} path {} (every {} s{}{})",
        st.repo,
        st.branch,
        st.path,
        st.poll_secs,
        if st.webhook { ", webhook on" } else { "" },
        if st.trusted_signers > 0 {
            format!(", signed commits only: {} trusted keys", st.trusted_signers)
        } else {
            String::new()
        }
    );
    crate::outln!(
        "last seen commit:    {}{}",
        s.last_seen.as_deref().unwrap_or("none yet"),
        s.last_seen_summary
            .as_deref()
            .map(|m| format!("  {m}"))
            .unwrap_or_default()
    );
    crate::outln!(
        "last applied commit: {}{}",
        s.last_applied.as_deref().unwrap_or("none"),
        s.signed_by
            .as_deref()
            .map(|w| format!("  signed by {w}"))
            .unwrap_or_default()
    );
    match &s.last_error {
        Some(e) => crate::outln!("last error:          {e}"),
        None => crate::outln!("last error:          none"),
    }
    for c in &s.changes {
        crate::outln!("  {c}");
    }
    match (&s.push_error, &s.pushed) {
        (Some(e), _) => crate::outln!("status branch {}: not pushed: {e}", st.status_branch),
        (None, Some(c)) => crate::outln!("status branch {}: pushed for {c}", st.status_branch),
        (None, None) => {}
    }
    if st.fleets.is_empty() {
        crate::outln!("no fleets from git");
    }
    for f in &st.fleets {
        let counts: Vec<String> = f
            .counts
            .iter()
            .map(|(k, n)| {
                let k = match k {
                    Standing::Converged => "converged",
                    Standing::Converging => "converging",
                    Standing::Blocked => "blocked",
                    Standing::Left => "left",
                };
                format!("{n} {k}")
            })
            .collect();
        crate::outln!(
            "fleet {}: {}  {}",
            f.name,
            f.apps.join(", "),
            if counts.is_empty() {
                "no devices".into()
            } else {
                counts.join(", ")
            }
        );
    }
}
