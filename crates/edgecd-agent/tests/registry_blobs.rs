//! Blobs in an OCI registry (`--blob-registry`): uploads land in the registry, a published
//! release becomes an OCI artifact with its signatures and SBOM as referrers, and a real
//! agent installs from the registry (or the mirror of its site) — the server's own copies
//! are deleted first, so nothing can come from it.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_server::registry::{RELEASE_ARTIFACT, RegistryConfig};
use edgecd_testkit::services::Registry;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

fn get_json(url: &str, accept: &str) -> serde_json::Value {
    let mut r = ureq::get(url).header("accept", accept).call().expect(url);
    serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json")
}

#[test]
fn agents_install_from_the_registry_and_its_mirror() {
    let Some(registry) = Registry::try_start() else {
        return;
    };
    // The "mirror" of site berlin is a second registry holding the same repository.
    let Some(mirror) = Registry::try_start() else {
        return;
    };
    let repo = "edgecd/blobs";
    let mut cfg = RegistryConfig::parse(&format!("{}/{repo}", registry.url())).expect("config");
    cfg.mirrors.insert("berlin".into(), mirror.url());
    let env = Env::with(None, |c| c.blob_registry = Some(cfg.clone()));
    let r1 = env.release("receipt-parser", "1.0.0", 256 * 1024);
    let info = env.publish(&r1).expect("publish");

    // Every blob of the release is in the registry, and the release is an artifact with
    // its referrers (fallback tag: the registry has no referrers API).
    let mut blobs = vec![
        &info.release.manifest,
        &info.release.manifest_sig,
        &info.release.bundle,
        &info.release.bundle_sig,
    ];
    blobs.extend(info.sbom.as_ref());
    for b in &blobs {
        let r = ureq::head(format!("{}/v2/{repo}/blobs/{}", registry.url(), b.digest))
            .call()
            .expect("HEAD");
        assert_eq!(r.status(), 200, "{} in the registry", b.digest);
    }
    let manifest = get_json(
        &format!(
            "{}/v2/{repo}/manifests/receipt-parser-1.0.0",
            registry.url()
        ),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(manifest["artifactType"], RELEASE_ARTIFACT);
    assert_eq!(
        manifest["layers"][1]["digest"],
        info.release.bundle.digest.as_str()
    );
    let subject = {
        let r = ureq::head(format!(
            "{}/v2/{repo}/manifests/receipt-parser-1.0.0",
            registry.url()
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .expect("HEAD manifest");
        r.headers()["docker-content-digest"]
            .to_str()
            .expect("digest")
            .to_string()
    };
    let referrers = get_json(
        &format!(
            "{}/v2/{repo}/manifests/{}",
            registry.url(),
            subject.replace(':', "-")
        ),
        "application/vnd.oci.image.index.v1+json",
    );
    let kinds: Vec<&str> = referrers["manifests"]
        .as_array()
        .expect("referrers")
        .iter()
        .filter_map(|m| m["artifactType"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            "application/vnd.cyclonedx+json"
        ]
    );

    // The mirror holds the same repository (an operator's sync: copy the blobs).
    for b in &blobs {
        let bytes = {
            let mut r = ureq::get(format!("{}/v2/{repo}/blobs/{}", registry.url(), b.digest))
                .call()
                .expect("GET");
            r.body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .expect("blob")
        };
        let loc = ureq::post(format!("{}/v2/{repo}/blobs/uploads/", mirror.url()))
            .send_empty()
            .expect("POST")
            .headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", mirror.url())
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        ureq::put(format!("{loc}{sep}digest={}", b.digest))
            .send(&bytes[..])
            .expect("PUT");
    }

    // The server forgets its own copies: devices can only install from the registries.
    for b in &blobs {
        let hex = b.digest.trim_start_matches("sha256:");
        std::fs::remove_file(env.path("server/blobs/sha256").join(hex)).expect("local copy");
    }
    let token = env.token(2, &[("fleet", "shop")]);
    let paris = spawn_agent(
        &env,
        "agent-paris",
        Some(&token),
        &["--label", "site=paris"],
    );
    let berlin = spawn_agent(
        &env,
        "agent-berlin",
        Some(&token),
        &["--label", "site=berlin"],
    );
    wait_for(T, "both agents to enroll", || {
        (env.devices().len() == 2).then_some(())
    });
    // Paris (no mirror) installs from the registry.
    assert_eq!(
        env.deploy("receipt-parser", "1.0.0", &[("site", "paris")])
            .len(),
        1
    );
    env.wait_running(&paris.data_dir, "receipt-parser@1.0.0", T);
    let (digest, _) = check_current(&paris.data_dir).expect("installed intact");
    assert_eq!(digest, r1.bundle_digest);
    // A server missing a blob that the registry holds (a replica that did not receive the
    // upload) fetches it, verified, when a release needs it.
    env.admin
        .check_release(&r1.publish_request().expect("request"))
        .expect("pre-flight");
    for b in [&info.release.manifest, &info.release.manifest_sig] {
        let local = env
            .path("server/blobs/sha256")
            .join(b.digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&local).expect("fetched back from the registry");
        assert_eq!(bytes.len() as u64, b.size);
    }
    // The registry loses the blobs: berlin can only install from its mirror.
    for b in &blobs {
        let r = ureq::delete(format!("{}/v2/{repo}/blobs/{}", registry.url(), b.digest))
            .call()
            .expect("DELETE");
        assert_eq!(r.status(), 202, "blob deleted from the registry");
    }
    assert_eq!(
        env.deploy("receipt-parser", "1.0.0", &[("site", "berlin")])
            .len(),
        1
    );
    env.wait_running(&berlin.data_dir, "receipt-parser@1.0.0", T);
    let (digest, _) = check_current(&berlin.data_dir).expect("installed intact");
    assert_eq!(digest, r1.bundle_digest);
    drop((paris, berlin));
}
