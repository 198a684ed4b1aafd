//! The pure half of GitOps: what a commit says (fleet files parsed and validated, release
//! digests pinned), whether its signature comes from a trusted key (SSH allowed-signers,
//! `sshsig` with namespace `git`), and the webhook's HMAC. No I/O; unit-tested here.

use crate::fleets::FleetSpec;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Files bigger than this in the fleets directory are refused (a fleet file is small).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// More fleet files than this in one commit are refused.
pub const MAX_FILES: usize = 1000;

/// Why a commit is not applied: where (file, when it is about one) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// The commit refused (absent when nothing could be fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The file in the repo the problem is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message: String,
}

impl Refusal {
    pub fn in_file(file: &str, message: impl Into<String>) -> Self {
        Refusal {
            commit: None,
            file: Some(file.to_string()),
            message: message.into(),
        }
    }

    pub fn general(message: impl Into<String>) -> Self {
        Refusal {
            commit: None,
            file: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.commit {
            write!(f, "commit {}: ", short(c))?;
        }
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// One fleet file of a commit: the fleet (exactly what `edgecd fleet apply -f` takes) and
/// the digests its releases are pinned to (`apps.APP.digest`, taken out of the spec).
#[derive(Debug, Clone, PartialEq)]
pub struct GitFleet {
    pub file: String,
    pub spec: FleetSpec,
    /// App → `sha256:…` the published release's bundle digest must be.
    pub digests: BTreeMap<String, String>,
}

/// `true` for the files of the fleets directory that are fleet files.
pub fn is_fleet_file(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// Parses one fleet file: YAML, `apps.APP.digest` pins (`sha256:` + 64 hex), then the
/// fleet itself, validated as `fleet apply` would.
pub fn parse_fleet_file(file: &str, bytes: &[u8]) -> Result<GitFleet, Refusal> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Refusal::in_file(
            file,
            format!(
                "{} bytes: a fleet file is at most {MAX_FILE_BYTES} bytes",
                bytes.len()
            ),
        ));
    }
    let mut v: serde_yaml::Value = serde_yaml::from_slice(bytes)
        .map_err(|e| Refusal::in_file(file, format!("not valid YAML: {e}")))?;
    let mut digests = BTreeMap::new();
    if let Some(apps) = v.get_mut("apps").and_then(|a| a.as_mapping_mut()) {
        for (app, placement) in apps.iter_mut() {
            let app = app.as_str().unwrap_or_default().to_string();
            let Some(m) = placement.as_mapping_mut() else {
                continue;
            };
            let Some(d) = m.remove("digest") else {
                continue;
            };
            let d = d.as_str().unwrap_or_default().to_string();
            let hex = d.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Refusal::in_file(
                    file,
                    format!(
                        "apps.{app}.digest {d:?}: write the release's bundle digest, sha256: and 64 hex digits (edgecd release list shows it)"
                    ),
                ));
            }
            digests.insert(app, d.to_ascii_lowercase());
        }
    }
    let spec: FleetSpec = serde_yaml::from_value(v)
        .map_err(|e| Refusal::in_file(file, format!("not a fleet: {e}")))?;
    spec.validate().map_err(|e| Refusal::in_file(file, e))?;
    Ok(GitFleet {
        file: file.to_string(),
        spec,
        digests,
    })
}

/// Parses every fleet file of a commit (`(path, bytes)`, other files ignored): the first
/// problem refuses the whole commit. Two files naming one fleet are refused too.
pub fn parse_commit(files: &[(String, Vec<u8>)]) -> Result<Vec<GitFleet>, Refusal> {
    let fleet_files: Vec<&(String, Vec<u8>)> =
        files.iter().filter(|(p, _)| is_fleet_file(p)).collect();
    if fleet_files.len() > MAX_FILES {
        return Err(Refusal::general(format!(
            "{} fleet files: at most {MAX_FILES} per repo",
            fleet_files.len()
        )));
    }
    let mut out: Vec<GitFleet> = vec![];
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (path, bytes) in fleet_files {
        let f = parse_fleet_file(path, bytes)?;
        if let Some(other) = names.insert(f.spec.name.clone(), path.clone()) {
            return Err(Refusal::in_file(
                path,
                format!(
                    "fleet {} is also defined in {other}: one file per fleet",
                    f.spec.name
                ),
            ));
        }
        out.push(f);
    }
    Ok(out)
}

/// Checks a pinned digest against the published release's bundle digest.
pub fn check_digest(
    file: &str,
    release: &str,
    pinned: &str,
    published: &str,
) -> Result<(), Refusal> {
    if pinned.eq_ignore_ascii_case(published) {
        Ok(())
    } else {
        Err(Refusal::in_file(
            file,
            format!(
                "{release} is pinned to digest {pinned} but the published release's digest is {published}: fix the pin or publish the release it names"
            ),
        ))
    }
}

/// Trusted commit signers, in OpenSSH `allowed_signers` form: one key a line,
/// `PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]` (blank lines and `#` comments skipped).
#[derive(Debug, Clone)]
pub struct TrustedSigners(Vec<(String, ssh_key::PublicKey)>);

impl TrustedSigners {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = vec![];
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let Some(i) = tokens.iter().position(|t| {
                t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
            }) else {
                return Err(format!(
                    "trusted signers line {}: no key (expected `PRINCIPAL ssh-ed25519 AAAA…`)",
                    n + 1
                ));
            };
            let Some(b64) = tokens.get(i + 1) else {
                return Err(format!(
                    "trusted signers line {}: the key's base64 is missing",
                    n + 1
                ));
            };
            let key = ssh_key::PublicKey::from_openssh(&format!("{} {b64}", tokens[i]))
                .map_err(|e| format!("trusted signers line {}: {e}", n + 1))?;
            let who = if i == 0 { "" } else { tokens[0] };
            keys.push((who.to_string(), key));
        }
        if keys.is_empty() {
            return Err("the trusted signers file holds no key".into());
        }
        Ok(Self(keys))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Verifies a commit's `gpgsig` (an SSH signature, namespace `git`) over `signed` (the
    /// commit without it); the answer names the signer (principal and key fingerprint).
    pub fn verify_commit(&self, signature: Option<&[u8]>, signed: &[u8]) -> Result<String, String> {
        let Some(sig) = signature else {
            return Err("the commit is not signed, and only commits signed by a trusted key are applied: sign it (git commit -S with an SSH key listed in the trusted signers)".into());
        };
        let sig = ssh_key::SshSig::from_pem(sig).map_err(|e| {
            format!("the commit's signature is not an SSH signature ({e}); only SSH-signed commits are supported")
        })?;
        let Some((who, key)) = self
            .0
            .iter()
            .find(|(_, k)| k.key_data() == sig.public_key())
        else {
            let fp = ssh_key::PublicKey::from(sig.public_key().clone())
                .fingerprint(ssh_key::HashAlg::Sha256);
            return Err(format!(
                "the commit is signed by key {fp}, which is not a trusted signer"
            ));
        };
        let fp = key.fingerprint(ssh_key::HashAlg::Sha256);
        key.verify("git", signed, &sig)
            .map_err(|e| format!("the commit's signature by {fp} does not verify: {e}"))?;
        Ok(if who.is_empty() {
            fp.to_string()
        } else {
            format!("{who} ({fp})")
        })
    }
}

/// GitHub's webhook signature: `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the
/// body with the shared secret (compared in constant time).
pub fn webhook_signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The header value a sender computes (tests, docs).
pub fn webhook_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn fleet_files_parse_with_digest_pins_taken_out() {
        let f = parse_fleet_file(
            "fleets/cams.yaml",
            format!("name: cams\nselector: {{site: lab}}\napps:\n  det:\n    release: det@1.0.0\n    digest: {D}\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(f.spec.name, "cams");
        assert_eq!(f.digests["det"], D);
        assert_eq!(f.spec.apps["det"].release, "det@1.0.0");
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_problem() {
        for (text, want) in [
            ("name: cams\napps: [oops\n", "not valid YAML"),
            (
                "name: cams\napps: {det: {release: '1'}}\nonunmatch: keep\n",
                "unknown field `onunmatch`",
            ),
            ("name: Cams\napps: {det: {release: '1'}}\n", "fleet name"),
            (
                "name: cams\napps: {det: {release: '1', digest: sha256:abc}}\n",
                "apps.det.digest",
            ),
        ] {
            let e = parse_fleet_file("fleets/x.yaml", text.as_bytes()).unwrap_err();
            assert_eq!(e.file.as_deref(), Some("fleets/x.yaml"));
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_commit_is_refused_whole_and_duplicates_are_named() {
        let ok = "name: a\napps: {det: {release: '1'}}\n";
        let parsed = parse_commit(&files(&[
            ("f/a.yaml", ok),
            ("f/README.md", "# not yaml: ["),
        ]))
        .unwrap();
        assert_eq!(parsed.len(), 1, "non-YAML files are ignored");
        let e = parse_commit(&files(&[("f/a.yaml", ok), ("f/b.yml", ok)])).unwrap_err();
        assert!(
            e.message.contains("also defined in f/a.yaml") && e.file.as_deref() == Some("f/b.yml"),
            "{e}"
        );
        let e = parse_commit(&files(&[("f/a.yaml", ok), ("f/z.yaml", "apps: 3")])).unwrap_err();
        assert_eq!(e.file.as_deref(), Some("f/z.yaml"));
    }

    #[test]
    fn digests_must_match_the_published_one() {
        assert!(
            check_digest(
                "f",
                "det@1",
                D,
                &D.to_uppercase().replace("SHA256", "sha256")
            )
            .is_ok()
        );
        let e = check_digest("f", "det@1", D, "sha256:ff").unwrap_err();
        assert!(
            e.message.contains("pinned to digest") && e.message.contains("sha256:ff"),
            "{e}"
        );
    }

    #[test]
    fn webhook_hmac_is_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = webhook_signature(b"s3cret", body);
        assert!(webhook_signature_ok(b"s3cret", body, Some(&sig)));
        assert!(!webhook_signature_ok(b"other", body, Some(&sig)));
        assert!(!webhook_signature_ok(b"s3cret", b"{}", Some(&sig)));
        assert!(!webhook_signature_ok(b"s3cret", body, None));
        assert!(!webhook_signature_ok(
            b"s3cret",
            body,
            Some(sig.trim_start_matches("sha256="))
        ));
        assert!(!webhook_signature_ok(b"s3cret", body, Some("sha256=zz")));
    }

    #[test]
    fn trusted_signers_parse_and_refuse_junk() {
        let line = "alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti alice";
        let t = TrustedSigners::parse(&format!("# team\n\n{line}\n")).unwrap();
        assert_eq!(t.len(), 1);
        assert!(TrustedSigners::parse("# nothing\n").is_err());
        assert!(
            TrustedSigners::parse("alice AAAA\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(TrustedSigners::parse("alice ssh-ed25519 !!!\n").is_err());
        let e = t.verify_commit(None, b"tree x").unwrap_err();
        assert!(e.contains("not signed"), "{e}");
        let e = t
            .verify_commit(
                Some(b"-----BEGIN PGP SIGNATURE-----\nx\n-----END PGP SIGNATURE-----\n"),
                b"x",
            )
            .unwrap_err();
        assert!(e.contains("not an SSH signature"), "{e}");
    }
}
