//! Checks edgecd-sign against independent implementations: `@sigstore/verify` (Node) verifies
//! our bundles offline, `openssl` verifies our signatures and makes keys and signatures we read,
//! and Python (PyNaCl secretbox + hashlib.scrypt, around an openssl-made PKCS#8 key) writes
//! cosign-format encrypted keys we load.
//! Missing tools skip with a notice, or fail when `EDGECD_REQUIRE_EXTERNAL=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgecd_sign::{
    KeyError, SigningKey, SigstoreBundle, VerifyingKey, sign_artifact, verify_artifact,
};

const ARTIFACT: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program on PATH, or the testkit's skip / required-failure behaviour.
fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    edgecd_testkit::external(
        name,
        found.unwrap_or_else(|| PathBuf::from(format!("/nonexistent/{name}"))),
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "{cmd:?} -> {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

struct JsVerifier {
    node: PathBuf,
    node_modules: PathBuf,
}

impl JsVerifier {
    fn find() -> Option<Self> {
        let node_modules = edgecd_testkit::node_modules()?;
        let node = program("node")?;
        Some(JsVerifier { node, node_modules })
    }

    /// True when `@sigstore/verify` accepts `bundle` for `artifact` under `pub_pem`.
    fn verifies(&self, dir: &Path, bundle_json: &str, artifact: &[u8], pub_pem: &str) -> bool {
        let b = write(dir, "bundle.sigstore.json", bundle_json.as_bytes());
        let a = write(dir, "artifact", artifact);
        let k = write(dir, "key.pub", pub_pem.as_bytes());
        let out = run(Command::new(&self.node)
            .arg(crate_dir().join("tests/js/verify.mjs"))
            .arg(&self.node_modules)
            .args([&b, &a, &k]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => true,
            // A rejection: make sure it came from verification, not from a broken script.
            Some(1) if stderr.starts_with("FAIL: ") => false,
            _ => panic!("verify.mjs crashed or was misused: {}", out.status),
        }
    }
}

#[test]
fn sigstore_js_verifies_our_bundle_and_rejects_tampering() {
    let Some(js) = JsVerifier::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let pub_pem = key.verifying_key().to_spki_pem();
    let bundle = sign_artifact(&key, ARTIFACT).to_json_pretty();

    assert!(
        js.verifies(dir.path(), &bundle, ARTIFACT, &pub_pem),
        "@sigstore/verify rejected a good bundle"
    );

    let mut changed = ARTIFACT.to_vec();
    changed[10] ^= 1;
    assert!(
        !js.verifies(dir.path(), &bundle, &changed, &pub_pem),
        "@sigstore/verify accepted a changed artifact"
    );

    // A bundle made by another key is refused for this key.
    let other = sign_artifact(&SigningKey::generate(), ARTIFACT).to_json_pretty();
    assert!(
        !js.verifies(dir.path(), &other, ARTIFACT, &pub_pem),
        "@sigstore/verify accepted another key's bundle"
    );

    // Another key's signature relabelled with our key's hint is refused by the signature check.
    let mut relabelled = SigstoreBundle::from_json(other.as_bytes()).unwrap();
    relabelled.verification_material.public_key.hint = key.verifying_key().hint();
    assert!(
        !js.verifies(dir.path(), &relabelled.to_json_pretty(), ARTIFACT, &pub_pem),
        "@sigstore/verify accepted another key's signature"
    );

    // A changed signature byte is refused.
    let mut b = SigstoreBundle::from_json(bundle.as_bytes()).unwrap();
    let mut sig = b.signature_der().unwrap();
    let n = sig.len();
    sig[n - 1] ^= 1;
    b.message_signature.signature = base64_std(&sig);
    assert!(
        !js.verifies(dir.path(), &b.to_json_pretty(), ARTIFACT, &pub_pem),
        "@sigstore/verify accepted a bad signature"
    );
}

fn base64_std(bytes: &[u8]) -> String {
    // Tiny local encoder so the test does not need another dependency.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// True when `openssl dgst -sha256 -verify` accepts `sig_der` over `file`.
fn openssl_verifies(
    openssl: &Path,
    dir: &Path,
    pub_pem: &str,
    sig_der: &[u8],
    file: &[u8],
) -> bool {
    let k = write(dir, "ossl.pub", pub_pem.as_bytes());
    let s = write(dir, "ossl.sig", sig_der);
    let f = write(dir, "ossl.file", file);
    let out = run(Command::new(openssl)
        .args(["dgst", "-sha256", "-verify"])
        .arg(&k)
        .arg("-signature")
        .arg(&s)
        .arg(&f));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        assert!(
            stdout.contains("Verified OK"),
            "openssl exit 0 without `Verified OK`"
        );
    }
    out.status.success()
}

#[test]
fn openssl_verifies_our_signature_and_rejects_changed_file() {
    let Some(openssl) = program("openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let pub_pem = key.verifying_key().to_spki_pem();
    let json = sign_artifact(&key, ARTIFACT).to_json_pretty();
    let sig = SigstoreBundle::from_json(json.as_bytes())
        .unwrap()
        .signature_der()
        .unwrap();

    assert!(
        openssl_verifies(&openssl, dir.path(), &pub_pem, &sig, ARTIFACT),
        "openssl rejected our signature"
    );
    let mut changed = ARTIFACT.to_vec();
    changed.push(b'\n');
    assert!(
        !openssl_verifies(&openssl, dir.path(), &pub_pem, &sig, &changed),
        "openssl accepted a changed file"
    );
    let other = SigningKey::generate().verifying_key().to_spki_pem();
    assert!(
        !openssl_verifies(&openssl, dir.path(), &other, &sig, ARTIFACT),
        "openssl accepted the wrong key"
    );
}

#[test]
fn openssl_keys_and_signatures_are_read_by_us() {
    let Some(openssl) = program("openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sec1 = d.join("sec1.pem");
    let pkcs8 = d.join("pkcs8.pem");
    let pubk = d.join("pub.pem");
    assert!(
        run(Command::new(&openssl)
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out"
            ])
            .arg(&sec1))
        .status
        .success()
    );
    assert!(
        run(Command::new(&openssl)
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&sec1)
            .arg("-out")
            .arg(&pkcs8))
        .status
        .success()
    );
    assert!(
        run(Command::new(&openssl)
            .args(["ec", "-pubout", "-in"])
            .arg(&sec1)
            .arg("-out")
            .arg(&pubk))
        .status
        .success()
    );

    let from_sec1 = SigningKey::load(&sec1, None).expect("openssl SEC1 key");
    let from_pkcs8 = SigningKey::load(&pkcs8, None).expect("openssl PKCS#8 key");
    let public = VerifyingKey::load(&pubk).expect("openssl SPKI key");
    assert_eq!(from_sec1.verifying_key(), public);
    assert_eq!(from_pkcs8.verifying_key(), public);

    // openssl signs, we verify (and reject a changed message).
    let file = write(d, "msg", ARTIFACT);
    let sig = d.join("msg.sig");
    assert!(
        run(Command::new(&openssl)
            .args(["dgst", "-sha256", "-sign"])
            .arg(&pkcs8)
            .arg("-out")
            .arg(&sig)
            .arg(&file))
        .status
        .success()
    );
    let sig = std::fs::read(&sig).unwrap();
    public
        .verify(ARTIFACT, &sig)
        .expect("openssl signature verifies");
    assert!(public.verify(b"other", &sig).is_err());

    // Non-P-256 keys from openssl are refused by name.
    for (alg, expect) in [("ED25519", "Ed25519"), ("RSA", "RSA")] {
        let p = d.join(format!("{alg}.pem"));
        let mut cmd = Command::new(&openssl);
        cmd.args(["genpkey", "-algorithm", alg, "-out"]).arg(&p);
        if alg == "RSA" {
            cmd.args(["-pkeyopt", "rsa_keygen_bits:1024"]);
        }
        assert!(run(&mut cmd).status.success());
        let e = SigningKey::load(&p, None).unwrap_err().to_string();
        assert!(
            e.contains(&format!("unsupported key type {expect}"))
                && e.contains(&format!("{alg}.pem")),
            "{e}"
        );
    }
}

#[test]
fn python_made_cosign_key_loads_signs_and_verifies() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let Some(openssl) = program("openssl") else {
        return;
    }; // make_cosign_key.py generates the key pair with it
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("cosign");
    let out = run(Command::new(&python)
        .arg(crate_dir().join("tests/py/make_cosign_key.py"))
        .arg(&prefix)
        .arg("correct horse"));
    assert!(out.status.success(), "make_cosign_key.py failed");
    let key_path = dir.path().join("cosign.key");
    let pub_path = dir.path().join("cosign.pub");
    let pem = std::fs::read_to_string(&key_path).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{pem}"
    );

    let key = SigningKey::load(&key_path, Some(b"correct horse")).expect("right password loads");
    let python_pub = VerifyingKey::load(&pub_path).unwrap();
    assert_eq!(
        key.verifying_key(),
        python_pub,
        "decrypted key does not match Python's public key"
    );

    let bundle = sign_artifact(&key, ARTIFACT);
    verify_artifact(&bundle, ARTIFACT, &python_pub).expect("we verify with Python's public key");
    let pub_pem = std::fs::read_to_string(&pub_path).unwrap();
    let sig = bundle.signature_der().unwrap();
    assert!(
        openssl_verifies(&openssl, dir.path(), &pub_pem, &sig, ARTIFACT),
        "openssl rejected the signature"
    );

    let e = SigningKey::load(&key_path, Some(b"wrong horse")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("wrong password or corrupted key") && text.contains("cosign.key"),
        "{text}"
    );
    assert!(
        matches!(e, KeyError::InFile { ref source, .. } if matches!(**source, KeyError::WrongPassword))
    );
    let e = SigningKey::load(&key_path, None).unwrap_err().to_string();
    assert!(e.contains("COSIGN_PASSWORD"), "{e}");
}

#[test]
fn our_cosign_key_opens_in_python() {
    // The reverse direction: Python (PyNaCl + hashlib.scrypt) decrypts a key we encrypted and
    // openssl reads the PKCS#8 DER inside.
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    if program("openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let path = write(
        dir.path(),
        "ours.key",
        key.to_cosign_encrypted_pem(b"pw").unwrap().as_bytes(),
    );
    let script = r#"
import base64, hashlib, json, subprocess, sys
from nacl.secret import SecretBox
text = open(sys.argv[1]).read().strip().splitlines()
assert text[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----", text[0]
body = json.loads(base64.b64decode("".join(text[1:-1])))
kdf = body["kdf"]; p = kdf["params"]
k = hashlib.scrypt(sys.argv[2].encode(), salt=base64.b64decode(kdf["salt"]), n=p["N"], r=p["r"], p=p["p"], maxmem=256*1024*1024, dklen=32)
der = SecretBox(k).decrypt(base64.b64decode(body["ciphertext"]), base64.b64decode(body["cipher"]["nonce"]))
pub = subprocess.run(["openssl", "pkey", "-inform", "DER", "-pubout"], input=der, check=True, capture_output=True).stdout
sys.stdout.write(pub.decode())
"#;
    let out = run(Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg("pw"));
    assert!(out.status.success(), "Python could not open our cosign key");
    let pem = String::from_utf8(out.stdout).unwrap();
    assert_eq!(VerifyingKey::from_pem(&pem).unwrap(), key.verifying_key());
    let out = run(Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg("nope"));
    assert!(
        !out.status.success(),
        "Python opened our key with a wrong password"
    );
}
