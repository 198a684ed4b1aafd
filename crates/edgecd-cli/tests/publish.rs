//! Publishing and fleet changes through the real `edgecd` binary against an in-process
//! server: `release publish` twice (nothing re-uploaded), refused before any bundle byte
//! when untrusted, resuming a broken-off upload; `keys trust` refusing a private key before
//! any request; `deploy`/`rollback` confirmation (`--yes`), `--dry-run`, skipped
//! incompatible devices and the non-zero exit when nothing matches.
mod common;

use edgecd_api::protocol::{CreateTokenRequest, EnrollRequest, EnrollResponse, Inventory};
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release::{self as fixtures, ReleaseFiles};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

struct Lab {
    tmp: tempfile::TempDir,
    srv: EmbeddedServer,
    ci: SigningKey,
}

impl Lab {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut cfg = Config::new(tmp.path().join("data"));
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        let srv = EmbeddedServer::start(cfg).expect("server");
        Self {
            tmp,
            srv,
            ci: SigningKey::generate(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.srv.addr)
    }

    fn admin(&self) -> edgecd_agent::admin::AdminClient {
        edgecd_agent::admin::AdminClient::new(&self.url(), &self.srv.admin_token, None)
            .expect("client")
    }

    fn cli(&self, args: &[&str]) -> Output {
        common::edgecd()
            .current_dir(self.tmp.path())
            .args(args)
            .env("EDGECD_SERVER", self.url())
            .env("EDGECD_TOKEN", &self.srv.admin_token)
            .env_remove("EDGECD_CA_CERT")
            .output()
            .expect("run edgecd")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "edgecd {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf8")
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            !o.status.success(),
            "edgecd {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stderr).expect("utf8")
    }

    fn release(
        &self,
        app: &str,
        version: &str,
        key: &SigningKey,
        model_len: usize,
    ) -> ReleaseFiles {
        fixtures::make_release(
            &self.tmp.path().join(format!("rel-{app}-{version}")),
            key,
            app,
            version,
            fixtures::rpi5(),
            fixtures::infer_pin(),
            model_len,
        )
        .expect("release")
    }

    fn trust(&self, key: &SigningKey) {
        self.admin()
            .trust_key(&key.verifying_key().to_spki_pem(), None)
            .expect("trust");
    }

    fn publish_json(&self, r: &ReleaseFiles) -> serde_json::Value {
        let out = self.ok(&[
            "release",
            "publish",
            r.bundle.to_str().expect("utf8"),
            "--json",
        ]);
        serde_json::from_str(&out).expect("JSON output")
    }

    fn enroll(&self, labels: &[(&str, &str)], board: &str) -> String {
        let token = self
            .admin()
            .create_token(&CreateTokenRequest::default())
            .expect("token")
            .token;
        let req = EnrollRequest {
            token,
            inventory: Inventory {
                board: board.into(),
                board_model: None,
                ram_mb: 4096,
                accelerator: None,
                runtimes: BTreeMap::from([("edgecd-infer".into(), "0.1.0".into())]),
                agent_version: "test".into(),
                ..Default::default()
            },
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
        };
        let mut resp = ureq::post(format!("{}/api/v1/devices/enroll", self.url()))
            .header("content-type", "application/json")
            .send(serde_json::to_vec(&req).expect("json"))
            .expect("enroll");
        let text = resp.body_mut().read_to_string().expect("body");
        let e: EnrollResponse = serde_json::from_str(&text).expect("enroll response");
        e.device_id
    }

    fn assigned(&self, id: &str) -> Option<(String, u64)> {
        let d = self.admin().show_device(id).expect("device");
        d.assigned.zip(d.assignment_version)
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).expect("size").len()
}

/// Publishing the same release again succeeds, says so, and uploads no byte (every blob
/// is found on the server by `HEAD` and skipped).
#[test]
fn publishing_twice_uploads_nothing_the_second_time() {
    let lab = Lab::new();
    lab.trust(&lab.ci);
    let r = lab.release("shop-model", "1.0.0", &lab.ci, 200_000);
    let first = lab.publish_json(&r);
    assert_eq!(first["alreadyPublished"], false, "{first}");
    let total: u64 = [
        &r.bundle,
        &r.bundle_sig,
        &r.manifest,
        &r.manifest_sig,
        &r.sbom,
    ]
    .into_iter()
    .map(|p| size(p))
    .sum();
    assert_eq!(first["uploadedBytes"], total, "{first}");
    assert_eq!(first["release"]["bundleDigest"], r.bundle_digest.as_str());
    let second = lab.publish_json(&r);
    assert_eq!(second["alreadyPublished"], true, "{second}");
    assert_eq!(second["uploadedBytes"], 0, "{second}");
    assert_eq!(second["uploadedBlobs"], 0, "{second}");
    assert_eq!(second["skippedBlobs"], 5, "{second}");
    let human = lab.ok(&["release", "publish", r.bundle.to_str().expect("utf8")]);
    assert!(
        human.starts_with("already published shop-model@1.0.0"),
        "{human}"
    );
}

/// A release the server would refuse (signed by a key it does not trust) is refused by
/// the pre-flight check, before any byte of the bundle is uploaded.
#[test]
fn untrusted_release_is_refused_before_the_bundle_is_uploaded() {
    let lab = Lab::new();
    lab.trust(&lab.ci);
    let rogue = SigningKey::generate();
    let r = lab.release("shop-model", "1.0.0", &rogue, 200_000);
    let err = lab.fails(&["release", "publish", r.bundle.to_str().expect("utf8")]);
    assert!(
        err.contains("does not trust") && err.contains("nothing of the bundle was uploaded"),
        "{err}"
    );
    let bundle = fixtures::blob_ref(&r.bundle).expect("ref");
    assert_eq!(
        lab.srv.state.blobs.size(&bundle.digest),
        None,
        "bundle not stored"
    );
    assert_eq!(
        lab.srv.state.blobs.partial_len(&bundle.digest),
        0,
        "no bundle byte received"
    );
}

/// An upload broken off midway is resumed by the next publish: only the missing part of
/// the bundle is sent.
#[test]
fn publish_resumes_an_interrupted_upload() {
    use std::io::Write;
    let lab = Lab::new();
    lab.trust(&lab.ci);
    let r = lab.release("shop-model", "1.0.0", &lab.ci, 1 << 20);
    let bundle = fixtures::blob_ref(&r.bundle).expect("ref");
    let bytes = std::fs::read(&r.bundle).expect("bundle");
    let part = bytes.len() / 3;
    {
        let mut c = std::net::TcpStream::connect(lab.srv.addr).expect("connect");
        write!(
            c,
            "PUT /api/v1/admin/blobs/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nUpload-Length: {}\r\n\r\n",
            bundle.digest,
            lab.srv.admin_token,
            bytes.len(),
            bytes.len()
        )
        .expect("head");
        c.write_all(&bytes[..part]).expect("part");
    }
    edgecd_testkit::wait_for(
        "the server to keep the broken-off part",
        std::time::Duration::from_secs(30),
        || {
            // The slot is free once the server wound up the broken request.
            let free = lab.srv.state.blobs.begin(&bundle.digest).is_some();
            let (stored, have) = lab.admin().blob_state(&bundle.digest).ok()?;
            (free && !stored && have == part as u64).then_some(())
        },
    );
    let out = lab.publish_json(&r);
    let others: u64 = [&r.bundle_sig, &r.manifest, &r.manifest_sig, &r.sbom]
        .into_iter()
        .map(|p| size(p))
        .sum();
    assert_eq!(
        out["uploadedBytes"],
        others + bundle.size - part as u64,
        "{out}"
    );
    assert_eq!(lab.srv.state.blobs.size(&bundle.digest), Some(bundle.size));
}

/// `keys trust` refuses a private key file before sending anything, and says to pass the
/// `.pub` file; the server is never contacted.
#[test]
fn keys_trust_refuses_a_private_key_before_any_request() {
    let dir = tempfile::tempdir().expect("tmp");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let key = SigningKey::generate();
    let files = [
        ("pkcs8.key", key.to_pkcs8_pem()),
        (
            "cosign.key",
            key.to_cosign_encrypted_pem(b"pw").expect("cosign"),
        ),
        (
            "both.pem",
            format!(
                "{}{}",
                key.verifying_key().to_spki_pem(),
                key.to_pkcs8_pem()
            ),
        ),
    ];
    for (name, pem) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).expect("write");
        let o = common::edgecd()
            .args(["keys", "trust", p.to_str().expect("utf8")])
            .env("EDGECD_SERVER", &url)
            .env("EDGECD_TOKEN", "eda_test")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: {err}");
        assert!(
            err.contains("private key") && err.contains(".pub"),
            "{name}: {err}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI contacted the server: {other:?}"),
    }
}

/// `deploy` skips incompatible devices and lists them, `--dry-run` changes nothing, a
/// change without a selector needs `--yes` when there is no terminal, and a deploy no
/// device would get fails with the reason. `rollback` keeps to the app's devices.
#[test]
fn deploy_and_rollback_scope_through_the_cli() {
    let lab = Lab::new();
    lab.trust(&lab.ci);
    for (app, v) in [("shop", "1.0.0"), ("shop", "2.0.0"), ("other", "1.0.0")] {
        let r = lab.release(app, v, &lab.ci, 4096);
        lab.publish_json(&r);
    }
    let a = lab.enroll(&[("fleet", "shop")], "rpi5");
    let old = lab.enroll(&[("fleet", "shop")], "rpi4");
    let b = lab.enroll(&[("fleet", "other")], "rpi5");

    let dry = lab.ok(&[
        "deploy",
        "shop@1.0.0",
        "--selector",
        "fleet=shop",
        "--dry-run",
    ]);
    assert!(
        dry.contains(&format!("would assign shop@1.0.0 to {a}"))
            && dry.contains(&format!("skipped {old}: cannot run shop@1.0.0: board rpi4"))
            && dry.contains("dry run, nothing changed"),
        "{dry}"
    );
    assert_eq!(lab.assigned(&a), None);
    let out = lab.ok(&["deploy", "shop@1.0.0", "--selector", "fleet=shop"]);
    assert!(out.contains("1 devices assigned, 1 skipped"), "{out}");
    assert_eq!(lab.assigned(&a), Some(("shop@1.0.0".into(), 1)));
    assert_eq!(lab.assigned(&old), None);
    lab.ok(&["deploy", "shop@2.0.0", "--selector", "fleet=shop"]);
    lab.ok(&["deploy", "other@1.0.0", "--selector", "fleet=other"]);

    // Nothing matches / nothing compatible: non-zero with the reason.
    let err = lab.fails(&["deploy", "shop@1.0.0", "--selector", "fleet=nowhere"]);
    assert!(
        err.contains("no devices match selector fleet=nowhere"),
        "{err}"
    );
    let err = lab.fails(&[
        "deploy",
        "shop@1.0.0",
        "--selector",
        "board=none",
        "--dry-run",
    ]);
    assert!(err.contains("no devices match"), "{err}");

    // Fleet-wide without a terminal: refused unless --yes.
    let err = lab.fails(&["rollback", "shop", "--to", "1.0.0"]);
    assert!(err.contains("--yes"), "{err}");
    let err = lab.fails(&["deploy", "other@1.0.0"]);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        lab.assigned(&a),
        Some(("shop@2.0.0".into(), 2)),
        "nothing changed"
    );

    let out = lab.ok(&["rollback", "shop", "--to", "1.0.0", "--yes", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["assigned"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(lab.assigned(&a), Some(("shop@1.0.0".into(), 3)));
    assert_eq!(
        lab.assigned(&b),
        Some(("other@1.0.0".into(), 1)),
        "other app untouched"
    );
    assert_eq!(
        lab.assigned(&old),
        None,
        "never assigned the app: untouched"
    );
}
