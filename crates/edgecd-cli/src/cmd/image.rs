//! `edgecd image build`: the runtime image of edgecd-infer, built without a base image or a
//! container engine: one layer holding the static binary (no shell, nothing else), run as a
//! non-root user (65532), for each platform given, under one multi-arch OCI index. Written as
//! an OCI image layout, then pushed with `skopeo copy --all --preserve-digests`; prints the
//! `REGISTRY/NAME@sha256:…` reference that `edgecd release create --image` pins.
//! `scripts/build-runtime-image` builds the static binaries and calls this.
use crate::output::print_json;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the edgecd-infer runtime image (amd64 and/or arm64) and push it to a registry.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// A static edgecd-infer binary for one platform, ARCH=PATH with ARCH amd64 or arm64
    /// (repeatable; give both for the Raspberry Pi and x86 hosts).
    #[arg(long = "binary", required = true, value_parser = parse_binary)]
    pub binaries: Vec<(String, PathBuf)>,
    /// Push to REGISTRY/NAME[:TAG] (e.g. ghcr.io/org/edgecd-infer:0.1.0).
    #[arg(long)]
    pub push: Option<String>,
    /// Where to write the OCI image layout (default: a temporary directory).
    #[arg(long)]
    pub oci_dir: Option<PathBuf>,
    /// Push over plain HTTP / without TLS verification (a registry on loopback).
    #[arg(long)]
    pub insecure_registry: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_binary(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((arch @ ("amd64" | "arm64"), p)) if !p.is_empty() => {
            Ok((arch.to_string(), PathBuf::from(p)))
        }
        _ => Err(format!(
            "--binary {s:?} must be ARCH=PATH with ARCH amd64 or arm64, e.g. arm64=target/aarch64-unknown-linux-gnu/release/edgecd-infer"
        )),
    }
}

pub fn run(c: ImageCommand) -> anyhow::Result<ExitCode> {
    match c {
        ImageCommand::Build(a) => build(a),
    }
}

const INDEX_MT: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_MT: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MT: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MT: &str = "application/vnd.oci.image.layer.v1.tar";
/// The runtime's user and group (no name: the image has no /etc/passwd).
pub const RUNTIME_USER: &str = "65532:65532";
const BINARY: &str = "edgecd-infer";

/// What a binary is, from its ELF header: the OCI architecture, and whether it is static.
fn elf_arch(path: &Path) -> anyhow::Result<&'static str> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h)
        .with_context(|| format!("{} is not an ELF binary", path.display()))?;
    anyhow::ensure!(
        &h[..4] == b"\x7fELF" && h[4] == 2 && h[5] == 1,
        "{} is not a 64-bit little-endian ELF binary",
        path.display()
    );
    let u16at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let arch = match u16at(18) {
        62 => "amd64",
        183 => "arm64",
        m => anyhow::bail!(
            "{} is for ELF machine {m}, not x86_64 or aarch64",
            path.display()
        ),
    };
    let phoff = u64::from_le_bytes(h[32..40].try_into().expect("8 bytes"));
    let (phentsize, phnum) = (u64::from(u16at(54)), u64::from(u16at(56)));
    let mut all = Vec::new();
    std::fs::File::open(path)?
        .take(phoff + phentsize * phnum)
        .read_to_end(&mut all)?;
    for i in 0..phnum {
        let o = (phoff + i * phentsize) as usize;
        let p_type = all
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        if p_type == Some(3) {
            anyhow::bail!(
                "{} is dynamically linked (it has an ELF interpreter): the image has no libc; build it static, e.g. RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --target {}-unknown-linux-gnu (scripts/build-runtime-image)",
                path.display(),
                if arch == "amd64" { "x86_64" } else { "aarch64" }
            );
        }
    }
    Ok(arch)
}

/// A ustar header for an executable at the image root (mode 0755, uid/gid 0, mtime 0).
fn exec_header(path: &str, size: u64) -> [u8; 512] {
    let mut h = edgecd_bundle::tarfmt::file_header(path, size);
    h[100..108].copy_from_slice(b"0000755\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Writes `bytes` as a blob of the layout; returns its descriptor fields.
fn put_blob(dir: &Path, bytes: &[u8]) -> anyhow::Result<(String, u64)> {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the layer (the binary at `/edgecd-infer`) into the layout; returns its digest and size.
fn put_layer(dir: &Path, binary: &Path) -> anyhow::Result<(String, u64)> {
    let size = std::fs::metadata(binary)?.len();
    let tmp = dir.join("blobs/sha256/.layer.tmp");
    let mut w = HashingWriter {
        inner: std::io::BufWriter::new(std::fs::File::create(&tmp)?),
        hasher: Sha256::new(),
        len: 0,
    };
    w.write_all(&exec_header(BINARY, size))?;
    let copied = std::io::copy(&mut std::fs::File::open(binary)?, &mut w)?;
    anyhow::ensure!(
        copied == size,
        "{} changed while reading it",
        binary.display()
    );
    let pad = (512 - size % 512) % 512;
    w.write_all(&vec![0u8; pad as usize + 1024])?;
    w.flush()?;
    let hex = hex::encode(w.hasher.finalize());
    std::fs::rename(&tmp, dir.join("blobs/sha256").join(&hex))?;
    Ok((format!("sha256:{hex}"), w.len))
}

/// Writes the OCI layout of the multi-arch image into `dir`; returns the index digest and
/// each platform's manifest digest.
pub fn write_layout(
    dir: &Path,
    binaries: &[(String, PathBuf)],
    tag: &str,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    let version = env!("CARGO_PKG_VERSION");
    let mut manifests = Vec::new();
    let mut platforms = Vec::new();
    for (arch, path) in binaries {
        let found = elf_arch(path)?;
        anyhow::ensure!(
            found == arch,
            "--binary {arch}={} holds an {found} binary",
            path.display()
        );
        let (layer, layer_size) = put_layer(dir, path)?;
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {
                "User": RUNTIME_USER,
                "Entrypoint": [format!("/{BINARY}")],
                "Cmd": ["--model-dir", "/model", "--listen", "0.0.0.0:9500"],
                "ExposedPorts": {"9500/tcp": {}},
                "Labels": {
                    "org.opencontainers.image.title": "edgecd-infer",
                    "org.opencontainers.image.version": version,
                    "dev.edgecd.runtime": format!("edgecd-infer@{version}"),
                },
            },
            "rootfs": {"type": "layers", "diff_ids": [layer]},
            "history": [{"created_by": "edgecd image build", "comment": "static edgecd-infer"}],
        });
        let (cfg_digest, cfg_size) = put_blob(dir, &serde_json::to_vec_pretty(&config)?)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MT,
            "config": {"mediaType": CONFIG_MT, "digest": cfg_digest, "size": cfg_size},
            "layers": [{"mediaType": LAYER_MT, "digest": layer, "size": layer_size}],
        });
        let (m_digest, m_size) = put_blob(dir, &serde_json::to_vec_pretty(&manifest)?)?;
        manifests.push(serde_json::json!({
            "mediaType": MANIFEST_MT,
            "digest": m_digest,
            "size": m_size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
        platforms.push((arch.clone(), m_digest));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MT,
        "manifests": manifests,
    });
    let (i_digest, i_size) = put_blob(dir, &serde_json::to_vec_pretty(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MT,
        "manifests": [{
            "mediaType": INDEX_MT,
            "digest": i_digest,
            "size": i_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&top)?)?;
    Ok((i_digest, platforms))
}

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let mut seen = std::collections::BTreeSet::new();
    for (arch, _) in &a.binaries {
        anyhow::ensure!(
            seen.insert(arch.clone()),
            "--binary {arch}=… is given twice"
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = a.oci_dir.clone().unwrap_or_else(|| tmp.path().join("oci"));
    let (digest, platforms) = write_layout(&dir, &a.binaries, "latest")?;
    let mut pinned = None;
    if let Some(dest) = &a.push {
        let repo = repo_of(dest)?;
        let skopeo = which("skopeo").context(
            "skopeo is needed to push the image (Debian package skopeo; scripts/setup/podman.sh installs it)",
        )?;
        let mut cmd = std::process::Command::new(skopeo);
        cmd.args(["copy", "--quiet", "--all", "--preserve-digests"]);
        if a.insecure_registry {
            cmd.arg("--dest-tls-verify=false");
        }
        let out = cmd
            .arg(format!("oci:{}:latest", dir.display()))
            .arg(format!("docker://{dest}"))
            .output()
            .context("running skopeo")?;
        anyhow::ensure!(
            out.status.success(),
            "pushing to {dest} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        pinned = Some(format!("{repo}@{digest}"));
    }
    if a.json {
        print_json(&serde_json::json!({
            "digest": digest,
            "image": pinned,
            "platforms": platforms.iter().map(|(a, d)| serde_json::json!({"architecture": a, "digest": d})).collect::<Vec<_>>(),
            "ociDir": a.oci_dir,
        }))?;
    } else {
        for (arch, d) in &platforms {
            crate::outln!("linux/{arch}: {d}");
        }
        crate::outln!("index: {digest}");
        match &pinned {
            Some(p) => crate::outln!("pushed; pin it with: edgecd release create --image {p}"),
            None => crate::outln!(
                "not pushed (no --push); the OCI layout is in {}",
                a.oci_dir
                    .as_deref()
                    .map_or("a temporary directory, now removed".into(), |p| p
                        .display()
                        .to_string())
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `REGISTRY/NAME` of `REGISTRY/NAME[:TAG]` (a digest is not allowed: the digest is the output).
fn repo_of(dest: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !dest.contains('@'),
        "--push {dest:?}: give REGISTRY/NAME[:TAG]; the digest is what this command prints"
    );
    let slash = dest.rfind('/').map_or(0, |i| i + 1);
    Ok(match dest[slash..].rfind(':') {
        Some(c) => dest[..slash + c].to_string(),
        None => dest.to_string(),
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_drops_the_tag_but_keeps_the_port() {
        assert_eq!(
            repo_of("127.0.0.1:5000/infer:1").unwrap(),
            "127.0.0.1:5000/infer"
        );
        assert_eq!(
            repo_of("127.0.0.1:5000/org/infer").unwrap(),
            "127.0.0.1:5000/org/infer"
        );
        assert!(repo_of("r/infer@sha256:ab").is_err());
    }

    #[test]
    fn exec_header_is_a_valid_0755_entry() {
        let h = exec_header(BINARY, 10);
        assert_eq!(&h[100..108], b"0000755\0");
        assert_eq!(&h[..BINARY.len()], BINARY.as_bytes());
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut c = h;
        c[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, c.iter().map(|&b| u32::from(b)).sum::<u32>());
    }

    #[test]
    fn dynamic_and_foreign_binaries_are_refused() {
        // This test binary is dynamically linked.
        let me = std::env::current_exe().unwrap();
        let e = elf_arch(&me).unwrap_err().to_string();
        assert!(
            e.contains("dynamically linked") && e.contains("crt-static"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(elf_arch(&p).is_err());
        assert!(parse_binary("riscv64=/x").is_err());
        assert!(parse_binary("arm64=/x").is_ok());
    }
}
