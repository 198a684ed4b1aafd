//! Check-in throughput of one server replica (behind `scripts/bench-server`): a real server
//! in-process (SQLite, or PostgreSQL with `--database URL`), N devices with a signed
//! assignment each, then C client threads checking in over real HTTP (keep-alive,
//! `If-None-Match` like the agent, a status and inventory in every body) for a fixed time.
//! Prints check-ins/s, latency p50/p99, database bytes per device and the server process's
//! memory per device, as one JSON line and a readable line.
//!
//! Usage: bench_checkins DEVICES SECONDS CLIENTS [--database URL]

use edgecd_api::protocol::{ReleaseRef, SignedAssignment};
use edgecd_server::store::{NewDevice, TokenRefusal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fake_release() -> ReleaseRef {
    let blob = |n: u8| edgecd_api::protocol::BlobRef {
        digest: format!("sha256:{}", hex::encode([n; 32])),
        size: 1000,
    };
    serde_json::from_value(serde_json::json!({
        "app": "bench", "version": "1.0.0", "bundleDigest": format!("sha256:{}", hex::encode([5u8; 32])),
        "manifest": blob(1), "manifestSig": blob(2), "bundle": blob(3), "bundleSig": blob(4),
        "hardware": {"board": "rpi5"}, "runtime": {"name": "edgecd-infer", "version": "0.1.0"}
    }))
    .expect("release ref")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let devices: usize = args.get(1).map_or(Ok(10_000), |s| s.parse())?;
    let secs: u64 = args.get(2).map_or(Ok(20), |s| s.parse())?;
    let clients: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let database = args
        .iter()
        .position(|a| a == "--database")
        .and_then(|i| args.get(i + 1).cloned());
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/var/tmp".into()))?;
    let mut cfg = edgecd_server::Config::new(dir.path().join("data"));
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.database = database.clone();
    cfg.checkin_interval_secs = 60;
    let srv = edgecd_server::EmbeddedServer::start(cfg)?;
    let url = format!("http://{}", srv.addr);
    let backend = srv.state.store.backend();
    let rss0 = rss_kib();

    // Devices and their assignments, straight into the store (enrollment is not measured).
    let t = Instant::now();
    let release = fake_release();
    let creds: Vec<(String, String)> = srv.block_on(async {
        let token_hash = edgecd_server::util::hash_secret("bench-token");
        srv.state
            .store
            .create_enroll_token(&token_hash, "{}", i64::MAX / 2, devices as i64)
            .await
            .expect("token");
        let mut out = Vec::with_capacity(devices);
        for i in 0..devices {
            let id = format!("bench{i:07}");
            let credential = format!("edc_{id}.s{i:016x}");
            let new = NewDevice {
                id: id.clone(),
                cred_hash: edgecd_server::util::hash_secret(&credential),
                labels: Default::default(),
                enrolled: 0,
                inventory: "{}".into(),
            };
            let r: Result<_, TokenRefusal> = srv
                .state
                .store
                .enroll(&token_hash, 1, &new)
                .await
                .expect("enroll");
            r.expect("token accepted");
            edgecd_server::assign::assign(
                &srv.state,
                &id,
                &release,
                edgecd_server::assign::Why::Deploy,
            )
            .await
            .expect("assign");
            out.push((id, credential));
        }
        out
    });
    let setup = t.elapsed();
    let rss_devices = rss_kib();

    let body = |id: &str| {
        serde_json::json!({
            "inventory": {"board": "rpi5", "ramMb": 8192, "runtimes": {"edgecd-infer": "0.1.0"},
                          "agentVersion": "0.1.0", "hostname": id},
            "status": {"phase": "committed", "running": {"app": "bench", "version": "1.0.0", "bundleDigest": format!("sha256:{}", hex::encode([5u8; 32])), "slot": "a"},
                       "assignmentVersion": 1},
            "protocol": edgecd_api::protocol::PROTOCOL_VERSION,
        })
        .to_string()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let creds = Arc::new(creds);
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let (stop, creds, url) = (stop.clone(), creds.clone(), url.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut etags: std::collections::HashMap<usize, String> = Default::default();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let k = i % creds.len();
                    let (id, cred) = &creds[k];
                    let t = Instant::now();
                    let mut req = agent
                        .post(format!("{url}/api/v1/devices/{id}/checkin"))
                        .header("authorization", format!("Bearer {cred}"))
                        .header("content-type", "application/json");
                    if let Some(e) = etags.get(&k) {
                        req = req.header("if-none-match", e);
                    }
                    match req.send(body(id)) {
                        Ok(mut r) if r.status() == 200 || r.status() == 304 => {
                            if let Some(e) = r.headers().get("etag").and_then(|v| v.to_str().ok()) {
                                etags.insert(k, e.to_string());
                            }
                            if r.status() == 200 {
                                let _: Option<SignedAssignment> = r
                                    .body_mut()
                                    .read_to_string()
                                    .ok()
                                    .and_then(|s| {
                                        serde_json::from_str::<serde_json::Value>(&s).ok()
                                    })
                                    .and_then(|v| {
                                        serde_json::from_value(v["assignment"].clone()).ok()
                                    });
                            }
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        other => {
                            if errors == 0 {
                                match other {
                                    Ok(mut r) => eprintln!(
                                        "check-in answered {}: {}",
                                        r.status(),
                                        r.body_mut().read_to_string().unwrap_or_default()
                                    ),
                                    Err(e) => eprintln!("check-in failed: {e}"),
                                }
                            }
                            errors += 1
                        }
                    }
                    i += clients;
                }
                (lat, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat = vec![];
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().expect("worker");
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let db_bytes: u64 = match &database {
        None => ["edgecd.db", "edgecd.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join("data").join(f)).ok())
            .map(|m| m.len())
            .sum(),
        Some(url) => {
            let name = url.rsplit('/').next().unwrap_or("edgecd").to_string();
            let out = std::process::Command::new("psql")
                .arg(url)
                .args(["-qAtc", &format!("SELECT pg_database_size('{name}')")])
                .output()?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        }
    };
    let rate = lat.len() as f64 / elapsed;
    let report = serde_json::json!({
        "backend": backend, "devices": devices, "clients": clients, "seconds": elapsed,
        "checkins": lat.len(), "errors": errors, "checkinsPerSec": rate,
        "p50Ms": q(0.5), "p99Ms": q(0.99), "setupSecs": setup.as_secs_f64(),
        "dbBytesPerDevice": db_bytes as f64 / devices as f64,
        "rssKibPerDevice": (rss_devices.saturating_sub(rss0)) as f64 / devices as f64,
        "rssMib": rss_kib() / 1024,
    });
    println!("{report}");
    eprintln!(
        "{backend:8} {devices:>7} devices, {clients} clients: {rate:>7.0} check-ins/s, p50 {:.1} ms, p99 {:.1} ms, {errors} errors; db {:.0} B/device, server+bench RSS {} MiB",
        q(0.5),
        q(0.99),
        db_bytes as f64 / devices as f64,
        rss_kib() / 1024
    );
    Ok(())
}
