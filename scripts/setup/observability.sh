#!/usr/bin/env bash
# Observability test tools: Debian's Prometheus (server + promtool) and Alertmanager. The tests
# start their own instances on 127.0.0.1 with free ports and temporary data directories
# (edgecd-testkit `services`) and kill them afterwards; no system service is left running.
# Idempotent: skipped when the binaries are present.
set -euo pipefail
sudo_cmd=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); fi

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 ||
  need+=(prometheus-alertmanager)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
  # Under systemd the packages start their services: the tests want only the binaries.
  if command -v systemctl >/dev/null 2>&1; then
    for s in prometheus prometheus-alertmanager; do
      if systemctl is-active --quiet "$s" 2>/dev/null; then "${sudo_cmd[@]}" systemctl stop "$s" || true; fi
    done
  fi
fi
prometheus --version 2>&1 | head -1
(prometheus-alertmanager --version 2>/dev/null || alertmanager --version) 2>&1 | head -1
