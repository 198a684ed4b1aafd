#!/usr/bin/env bash
# Runtime-image tests (edgecd-agent's podman mode, `edgecd image build`): podman with runc, a
# local OCI registry (Debian's docker-registry, CNCF distribution), skopeo and umoci. The tests
# start their own registry on 127.0.0.1 with a free port and a temporary directory
# (edgecd-testkit `services::Registry`) and stop it afterwards; no system service is left running.
# Idempotent: apt-get runs only when a tool is missing.
set -euo pipefail
sudo_cmd=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); fi

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Under systemd the package starts a registry on :5000: the tests want only the binary.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl stop docker-registry || true
  fi
fi
podman --version
skopeo --version
