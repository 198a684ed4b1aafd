#!/usr/bin/env bash
# Debian packages the tests call: openssl (signature cross-check), node + npm (@sigstore/verify),
# python3 with venv (independent readers and validators), systemd's systemd-analyze and
# systemd-sysusers (deploy/'s units: verify, security exposure, users); git and rsync
# (gitlab-ci-local runs the GitLab CI template's jobs in shell mode with them).
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v python3 >/dev/null || need+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-sysusers >/dev/null || need+=(systemd)
command -v git >/dev/null || need+=(git)
# ssh-keygen signs and git daemon serves the GitOps tests' repos (git daemon comes with git)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
