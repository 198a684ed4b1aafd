//! `edgecd token create|list|rotate|revoke`, `edgecd audit` and `edgecd server
//! backup|restore` through the real binary against an in-process server.
mod common;

use edgecd_server::{Config, EmbeddedServer};
use serde_json::Value;
use std::process::Output;

fn run(srv: &EmbeddedServer, token: &str, args: &[&str]) -> Output {
    common::edgecd()
        .args(args)
        .env("EDGECD_SERVER", format!("http://{}", srv.addr))
        .env("EDGECD_TOKEN", token)
        .env_remove("EDGECD_DATA_DIR")
        .env_remove("EDGECD_DATABASE")
        .output()
        .expect("run edgecd")
}

fn json(srv: &EmbeddedServer, token: &str, args: &[&str]) -> Value {
    let out = common::succeeded(args, run(srv, token, args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn start(dir: &std::path::Path) -> EmbeddedServer {
    let mut cfg = Config::new(dir);
    cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    EmbeddedServer::start(cfg).expect("server")
}

#[test]
fn tokens_are_created_listed_rotated_and_revoked_and_audited() {
    let d = tempfile::tempdir().expect("tmp");
    let srv = start(&d.path().join("data"));
    let admin = srv.admin_token.clone();
    let t = json(
        &srv,
        &admin,
        &["token", "create", "ci", "--role", "deployer", "--json"],
    );
    assert_eq!(
        (t["name"].as_str(), t["role"].as_str()),
        (Some("ci"), Some("deployer"))
    );
    let ci = t["token"].as_str().expect("secret").to_string();
    // The deployer can create enrollment tokens but not manage tokens.
    json(&srv, &ci, &["device", "token", "create", "--json"]);
    let o = run(&srv, &ci, &["token", "list"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs role admin"), "{err}");
    // Human output shows the secret once, with a warning.
    let o = common::succeeded(
        &[],
        run(
            &srv,
            &admin,
            &["token", "create", "eve", "--role", "viewer"],
        ),
    );
    assert!(o.contains("shown once") && o.contains("edt_"), "{o}");
    let bad = run(&srv, &admin, &["token", "create", "x", "--role", "root"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("viewer, deployer, approver or admin"));

    let list = json(&srv, &admin, &["token", "list", "--json"]);
    let names: Vec<_> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["admin", "ci", "eve"]);

    let r = json(&srv, &admin, &["token", "rotate", "ci", "--json"]);
    let ci2 = r["token"].as_str().expect("secret").to_string();
    let o = run(&srv, &ci, &["device", "list"]);
    assert!(!o.status.success(), "the old secret still works");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("401"),
        "{:?}",
        o
    );
    common::succeeded(&["device", "list"], run(&srv, &ci2, &["device", "list"]));
    let r = json(&srv, &admin, &["token", "revoke", "ci", "--json"]);
    assert!(r["revoked"].is_i64(), "{r}");
    assert!(!run(&srv, &ci2, &["device", "list"]).status.success());

    // The audit log names who did what; filters by token.
    let all = json(&srv, &admin, &["audit", "--json", "--since", "1h"]);
    let all = all.as_array().expect("array");
    assert!(all.iter().any(|r| r["token"] == "ci"
        && r["route"] == "/api/v1/admin/enrollment-tokens"
        && r["status"] == 200));
    let by_ci = json(&srv, &admin, &["audit", "--json", "--by", "ci"]);
    assert!(
        by_ci
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["token"] == "ci")
    );
    let text = common::succeeded(&[], run(&srv, &admin, &["audit", "--limit", "2"]));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("admin") && text.contains("/api/v1/admin/tokens/ci/revoke"),
        "{text}"
    );
    let o = run(&srv, &admin, &["audit", "--since", "yesterday-ish"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("give a duration"));
}

#[test]
fn server_backup_and_restore_commands() {
    let d = tempfile::tempdir().expect("tmp");
    let data = d.path().join("data");
    let srv = start(&data);
    let admin = srv.admin_token.clone();
    json(
        &srv,
        &admin,
        &["token", "create", "ops", "--role", "admin", "--json"],
    );
    let out = d.path().join("backup");
    let (data_s, out_s) = (data.to_str().expect("utf8"), out.to_str().expect("utf8"));
    let mut args = vec!["server", "backup", "--data-dir", data_s, out_s, "--json"];
    let db = srv.state.config.database.clone();
    if let Some(u) = &db {
        args.extend(["--database", u.as_str()]);
    }
    let m = json(&srv, &admin, &args);
    assert_eq!(m["backend"], srv.state.store.backend());
    // Not into a backup that exists.
    assert!(!run(&srv, &admin, &args).status.success());

    let fresh = d.path().join("fresh");
    let fresh_db = edgecd_testkit::postgres::database_for(&fresh);
    let fresh_s = fresh.to_str().expect("utf8");
    let mut args = vec!["server", "restore", "--data-dir", fresh_s, out_s, "--json"];
    if let Some(u) = &fresh_db {
        args.extend(["--database", u.as_str()]);
    }
    let r = json(&srv, &admin, &args);
    assert_eq!(r, m);
    let mut cfg = Config::new(&fresh);
    cfg.database = fresh_db;
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    let srv2 = EmbeddedServer::start(cfg).expect("restored server");
    assert_eq!(srv2.admin_token, admin);
    let list = json(&srv2, &admin, &["token", "list", "--json"]);
    assert_eq!(list.as_array().expect("array").len(), 2, "{list}");
    // A backup directory without its manifest is refused.
    std::fs::remove_file(out.join("backup.json")).expect("rm");
    let o = run(
        &srv,
        &admin,
        &[
            "server",
            "restore",
            "--data-dir",
            d.path().join("other").to_str().expect("utf8"),
            out_s,
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a complete edgecd backup"));
}
