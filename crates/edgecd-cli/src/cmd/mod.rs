//! One module per top-level subcommand.
pub mod bundle;
pub mod demo;
pub mod keys;
pub mod release;
