//! One module per top-level subcommand.
pub mod access;
pub mod admin;
pub mod bundle;
pub mod demo;
pub mod fleet;
pub mod gitops;
pub mod image;
pub mod keys;
pub mod release;
pub mod rollout;
pub mod server;
pub mod sim;
pub mod troubleshoot;
