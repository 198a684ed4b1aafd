#!/usr/bin/env bash
# The Sigstore project's own verifier (@sigstore/verify) for offline signature checks.
set -euo pipefail
cache="${EDGECD_TEST_CACHE:?}"
mkdir -p "$cache/npm"
cd "$cache/npm"
[ -f package.json ] || echo '{"name":"edgecd-test-tools","private":true}' > package.json
[ -d node_modules/@sigstore/verify ] ||
  npm install --silent --no-audit --no-fund @sigstore/verify @sigstore/bundle @sigstore/protobuf-specs
