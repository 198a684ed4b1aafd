//! The `edgecd` command line: clap definitions and thin glue to the libraries.
//!
//! Owns: argument parsing, human and `--json` output, progress bars, exit codes. Each
//! subcommand lives in `cmd/<name>.rs` and calls into a library crate.

pub mod cmd;
pub mod demo_model;
pub mod output;
pub mod provenance;
pub mod story;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "edgecd",
    version,
    about = "Safe, observable model rollouts to edge device fleets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an ECDSA P-256 release signing key pair.
    Keygen(cmd::keys::KeygenArgs),
    /// Build, inspect, sign and verify model bundles.
    #[command(subcommand)]
    Bundle(cmd::bundle::BundleCommand),
    /// Create and verify signed release manifests; publish and list releases on a server.
    #[command(subcommand)]
    Release(cmd::release::ReleaseCommand),
    /// Build the edgecd-infer runtime image (multi-arch, static, non-root) and push it.
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Run the end-to-end demo (nothing to install).
    Demo(cmd::demo::DemoArgs),
    /// Run the control-plane server (`server backup|restore`: online backup and restore).
    Server(Box<cmd::server::ServerArgs>),
    /// Manage which keys the server trusts to sign releases.
    #[command(subcommand)]
    Keys(cmd::admin::KeysCommand),
    /// Manage devices: enrollment tokens, listing, labels, logs, diagnosis, revocation, deletion.
    #[command(subcommand)]
    Device(cmd::admin::DeviceCommand),
    /// Assign a release directly to the devices matching a selector that can run it (and
    /// keep it as desired state: devices that match later get it too).
    Deploy(cmd::admin::DeployArgs),
    /// Fleets as desired state: apply, diff, status, list, delete.
    #[command(subcommand)]
    Fleet(cmd::fleet::FleetCommand),
    /// Fleets from a git repo: `gitops --repo URL --branch B --path DIR` registers it,
    /// `gitops status`, `gitops disconnect`.
    Gitops(Box<cmd::gitops::GitopsArgs>),
    /// Progressive rollouts: start, status, list, promote, pause, resume, abort, approve,
    /// rollback, history.
    #[command(subcommand)]
    Rollout(cmd::rollout::RolloutCommand),
    /// Send the devices of an app (or those of them matching a selector) back to an earlier
    /// version of it.
    Rollback(cmd::rollout::RollbackArgs),
    /// Named API tokens with roles (viewer, deployer, approver, admin): create, list, rotate,
    /// revoke.
    #[command(subcommand)]
    Token(cmd::access::TokenCommand),
    /// Show the audit log: who changed what on the server, when and from where.
    Audit(cmd::access::AuditArgs),
    /// Simulate a fleet of devices against a server.
    Sim(cmd::sim::SimArgs),
}

/// Parses `args` and runs the command; errors are printed with their causes.
pub fn main_from_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(a) => cmd::keys::keygen(a),
        Command::Bundle(c) => cmd::bundle::run(c),
        Command::Release(c) => cmd::release::run(c),
        Command::Image(c) => cmd::image::run(c),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Server(a) => cmd::server::run(*a),
        Command::Keys(c) => cmd::admin::run_keys(c),
        Command::Device(c) => cmd::admin::run_device(c),
        Command::Deploy(a) => cmd::admin::run_deploy(a),
        Command::Fleet(c) => cmd::fleet::run(c),
        Command::Gitops(a) => cmd::gitops::run(*a),
        Command::Rollout(c) => cmd::rollout::run(c),
        Command::Rollback(a) => cmd::rollout::rollback(a),
        Command::Token(c) => cmd::access::run_token(c),
        Command::Audit(a) => cmd::access::run_audit(a),
        Command::Sim(a) => cmd::sim::run(a),
    }
}
