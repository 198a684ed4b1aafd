//! `deploy/prometheus` and `deploy/grafana` stay true to the code:
//! - promtool accepts the Prometheus config, the rule files and their unit tests, and every
//!   dashboard query parses as PromQL;
//! - every metric name the alert/recording rules and the dashboard use is exported by a live
//!   control plane, device agent (`--metrics-listen`) and inference runtime, so renaming a
//!   metric fails here instead of silently breaking an alert.
mod common;
use common::sibling;
use edgecd_cli::story::Lab;
use edgecd_testkit::{free_port, wait_for};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Referenced metrics that another change adds in parallel. The final integrator empties this
/// list once they are exported (the test fails when a listed name is already exported).
fn deploy_dir() -> PathBuf {
    edgecd_testkit::workspace_root().join("deploy")
}

fn yml_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no .yml files in {}", dir.display());
    v
}

fn promtool(args: &[&str]) -> Option<Output> {
    let bin = edgecd_testkit::tool("promtool")?;
    Some(
        Command::new(bin)
            .args(args)
            .current_dir(edgecd_testkit::workspace_root())
            .output()
            .expect("run promtool"),
    )
}

fn assert_ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn promtool_accepts_config_rules_and_rule_tests() {
    let prom = deploy_dir().join("prometheus");
    let config = prom.join("prometheus.yml");
    let Some(o) = promtool(&["check", "config", config.to_str().expect("utf8")]) else {
        return;
    };
    assert_ok("promtool check config", &o);
    // It loaded the rule file (a wrong relative path is an error) and found no warnings.
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
    assert!(!out.to_lowercase().contains("warning"), "{out}");

    let rules = yml_files(&prom.join("rules"));
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    assert_ok("promtool check rules", &promtool(&args).expect("promtool"));

    let tests = yml_files(&prom.join("tests"));
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    assert_ok("promtool test rules", &promtool(&args).expect("promtool"));
}

/// Every alert is covered by the rule tests, and carries the labels and annotations the
/// Alertmanager routing and the runbooks rely on.
#[test]
fn every_alert_is_tested_and_annotated() {
    let rules = rules_yaml();
    let tests: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy_dir().join("prometheus/tests/edgecd.rules.test.yml"))
            .expect("rule tests"),
    )
    .expect("rule tests YAML");
    // alert name → (fires in some case, quiet in some case)
    let mut covered: std::collections::BTreeMap<String, (bool, bool)> = Default::default();
    for t in tests["tests"].as_sequence().expect("tests") {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_string();
            let fires = a["exp_alerts"].as_sequence().is_some_and(|s| !s.is_empty());
            let e = covered.entry(name).or_default();
            if fires {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    let readme = std::fs::read_to_string(deploy_dir().join("README.md")).expect("README");
    let mut alerts = 0;
    for rule in rule_list(&rules) {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        alerts += 1;
        assert_eq!(
            covered.get(name),
            Some(&(true, true)),
            "{name}: needs a firing and a not-firing case in the rule tests"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for a in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][a]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: annotation {a}"
            );
        }
        let anchor = rule["annotations"]["runbook_url"]
            .as_str()
            .and_then(|u| u.rsplit_once('#'))
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            readme.contains(&format!("### {name}\n")),
            "{name}: no runbook section in deploy/README.md"
        );
        // Alerts about one rollout (series with a `rollout` label) carry its id for the
        // edgecd Alertmanager receiver.
        let expr = rule["expr"].as_str().unwrap_or("");
        if ["edgecd_server_rollout_gate_", "edgecd_server_rollout_step"]
            .iter()
            .any(|m| expr.contains(m))
        {
            assert_eq!(
                rule["labels"]["edgecd_rollout"].as_str(),
                Some("{{ $labels.rollout }}"),
                "{name}: edgecd_rollout label"
            );
        }
    }
    assert!(alerts >= 10, "only {alerts} alerts");
}

#[test]
fn dashboard_is_valid_and_its_queries_parse() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars = d["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "a `datasource` Prometheus data source variable"
    );
    // Every panel and query uses the variable, and panel ids are unique.
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    // promtool parses each query (Grafana's variables replaced by plain values).
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$site", ".*");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("json string")
        ));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("dashboard-queries.yml");
    std::fs::write(&f, &rules).expect("write");
    let Some(o) = promtool(&["check", "rules", f.to_str().expect("utf8")]) else {
        return;
    };
    assert_ok(&format!("dashboard queries:\n{rules}"), &o);
}

// ---- metric names referenced by PromQL ---------------------------------------------------

/// Aggregation operators and keywords that are not metric names.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal starting at `i` (`"…"`, `'…'` with escapes, `` `…` ``).
fn skip_string(b: &[char], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != q {
        if b[j] == '\\' && q != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Index just past the bracket closing the one at `i` (strings inside are skipped).
fn skip_group(b: &[char], i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            '"' | '\'' | '`' => {
                j = skip_string(b, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// The metric names an expression selects: identifiers that are not functions (followed by
/// `(`), aggregation operators, keywords, label names (in `{…}` and `by/on/… (…)` lists),
/// string literals, numbers and durations (also in `[…]`), or Grafana `$variables`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '"' | '\'' | '`' => i = skip_string(&b, i),
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '{' => i = skip_group(&b, i, '{', '}'),
            '[' => i = skip_group(&b, i, '[', ']'),
            '$' => {
                i += 1;
                if i < b.len() && b[i] == '{' {
                    i = skip_group(&b, i, '{', '}');
                } else {
                    while i < b.len() && is_ident(b[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers (1e-3, 0x1f, .5) and durations (5m, 1h30m).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                let mut j = i;
                while j < b.len() && b[j].is_whitespace() {
                    j += 1;
                }
                let paren = j < b.len() && b[j] == '(';
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if paren {
                        i = skip_group(&b, j, '(', ')');
                    }
                } else if !paren && !KEYWORDS.contains(&lower.as_str()) {
                    out.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn promql_metric_names_are_extracted_crudely_but_correctly() {
    let got = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        got(
            r#"sum by (release, le) (rate(a_bucket{job="x",le=~"0.1|1"}[5m]) * on (job, instance) group_left (release) b_info)"#
        ),
        ["a_bucket", "b_info"]
    );
    assert_eq!(
        got("histogram_quantile(0.95, sum(rate(x_bucket[$__rate_interval])) by (le))"),
        ["x_bucket"]
    );
    assert_eq!(
        got(
            "time() - (c_ts > 0 or d_start) > 900 unless ignoring(a) e offset 1h and f > bool 2.5e-3"
        ),
        ["c_ts", "d_start", "e", "f"]
    );
    assert_eq!(
        got(r#"label_replace(g, "dst", "$1 total", "src", "(.*)") # h in a comment"#),
        ["g"]
    );
    assert_eq!(
        got(
            r#"topk(10, max_over_time(i{site=~"$site", a="}"}[1h:5m])) / ${j} + count without (k) (l)"#
        ),
        ["i", "l"]
    );
    assert_eq!(got("level:m_total:rate5m"), ["level:m_total:rate5m"]);
    assert_eq!(got("vector(0) + scalar(n) + Inf + NaN"), ["n"]);
}

fn rules_yaml() -> serde_yaml::Value {
    let p = deploy_dir().join("prometheus/rules/edgecd.rules.yml");
    serde_yaml::from_str(&std::fs::read_to_string(&p).expect("rules")).expect("rules YAML")
}

fn rule_list(rules: &serde_yaml::Value) -> Vec<&serde_yaml::Value> {
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect()
}

fn dashboard() -> serde_json::Value {
    let p = deploy_dir().join("grafana/edgecd-fleet.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("dashboard")).expect("dashboard JSON")
}

/// Every `expr` in the dashboard (panels, rows, wherever they are).
fn dashboard_exprs(d: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    walk(d, &mut out);
    out
}

/// Metric names used by the rules and the dashboard (minus recording rules, `up`, `time`).
fn referenced() -> BTreeSet<String> {
    let rules = rules_yaml();
    let mut exprs: Vec<String> = rule_list(&rules)
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect();
    let recorded: BTreeSet<String> = rule_list(&rules)
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect();
    let d = dashboard();
    exprs.extend(dashboard_exprs(&d));
    // Variable queries: label_values(METRIC…, label).
    for v in d["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["definition"].as_str()
            && let Some(rest) = q.strip_prefix("label_values(")
        {
            exprs.push(rest.split([',', ')']).next().unwrap_or("").to_string());
        }
    }
    let mut names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    names.retain(|n| !recorded.contains(n) && n != "up" && n != "time");
    names
}

/// Family names in a text exposition (a histogram `x` exports `x_bucket`, `x_sum`, `x_count`).
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            out.insert(name.to_string());
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            out.insert(name.to_string());
        }
    }
    out
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn get(url: &str) -> Option<String> {
    ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported_live() {
    let wanted = referenced();
    // The extraction found the metrics of all three sources (it is not vacuous).
    for n in [
        "edgecd_server_rollout_gate_value",
        "edgecd_server_devices_silent",
        "edgecd_agent_installs_total",
        "edgecd_agent_last_checkin_success_timestamp_seconds",
        "edgecd_infer_request_duration_seconds_bucket",
        "edgecd_infer_model_info",
    ] {
        assert!(wanted.contains(n), "{n} not found among {wanted:?}");
    }

    let (agent_bin, infer_bin) = (sibling("edgecd-agent"), sibling("edgecd-infer"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let lab = Lab::start(d, 1, 250).expect("lab");
    lab.release("1.0.0", 1).expect("release");
    let token = lab
        .admin
        .create_token(&edgecd_api::protocol::CreateTokenRequest {
            labels: Default::default(),
            expires_in_secs: Some(600),
            max_uses: Some(1),
        })
        .expect("token")
        .token;
    let (thermal, throttle) = (d.join("temp"), d.join("get_throttled"));
    std::fs::write(&thermal, "52000\n").expect("thermal");
    std::fs::write(&throttle, "0x0\n").expect("throttle");
    let (agent_port, infer_port) = (free_port(), free_port());
    let data = d.join("agent");
    let mut procs = Procs(vec![]);
    procs.0.push(
        Command::new(&agent_bin)
            .args(["--server", &lab.url(), "--data-dir"])
            .arg(&data)
            .args(["--enroll-token", &token, "--board", "rpi5"])
            .args([
                "--runtime",
                "edgecd-infer@0.1.0",
                "--checkin-interval-ms",
                "300",
            ])
            .args(["--metrics-listen", &format!("127.0.0.1:{agent_port}")])
            .arg("--thermal-path")
            .arg(&thermal)
            .arg("--throttle-path")
            .arg(&throttle)
            .args([
                "--metrics-url",
                &format!("http://127.0.0.1:{infer_port}/metrics"),
            ])
            .env_remove("EDGECD_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("agent.log")).expect("log"))
            .spawn()
            .expect("agent"),
    );
    wait_for("the agent to enroll", Duration::from_secs(30), || {
        (lab.admin.list_devices().ok()?.len() == 1).then_some(())
    });
    lab.admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: "receipt-classifier".into(),
            version: "1.0.0".into(),
            selector: Default::default(),
        })
        .expect("deploy");
    let agent_url = format!("http://127.0.0.1:{agent_port}/metrics");
    let agent_text = wait_for(
        "the agent to install 1.0.0",
        Duration::from_secs(60),
        || get(&agent_url).filter(|t| t.contains("edgecd_agent_release_info{")),
    );
    // The runtime serves what the agent installed.
    procs.0.push(
        Command::new(&infer_bin)
            .arg("--model-dir")
            .arg(data.join("current"))
            .args([
                "--listen",
                &format!("127.0.0.1:{infer_port}"),
                "--threads",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("infer.log")).expect("log"))
            .spawn()
            .expect("edgecd-infer"),
    );
    let base = format!("http://127.0.0.1:{infer_port}");
    wait_for("the runtime to be ready", Duration::from_secs(60), || {
        get(&format!("{base}/readyz"))
    });
    let body = serde_json::json!({"inputs": [{"name": "features", "dtype": "float32", "shape": [1, 16], "data": (0..16).map(|i| i as f64 / 16.0).collect::<Vec<_>>()}]}).to_string();
    ureq::post(&format!("{base}/v1/infer"))
        .header("content-type", "application/json")
        .send(body.as_str())
        .expect("inference");
    let infer_text = get(&format!("{base}/metrics")).expect("runtime metrics");
    let server_text = get(&format!("{}/metrics", lab.url())).expect("server metrics");

    let mut exported = BTreeSet::new();
    for (what, text, prefix) in [
        ("server", &server_text, "edgecd_server_"),
        ("agent", &agent_text, "edgecd_agent_"),
        ("runtime", &infer_text, "edgecd_infer_"),
    ] {
        let f = families(text);
        assert!(
            f.iter().filter(|n| n.starts_with(prefix)).count() >= 5,
            "{what} exports too little:\n{text}"
        );
        exported.extend(f);
    }
    let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "deploy/ uses metrics nothing exports (renamed?): {missing:?}"
    );
}

/// The highest `systemd-analyze security` exposure each unit may have. The server and the
/// native runtime are held to the issue's 3.0; the agent runs as root (without capabilities)
/// to restart the runtime, and deploy/README.md says what each of its remaining exposures is
/// for.
const EXPOSURE_BOUNDS: [(&str, f64); 3] = [
    ("edgecd-server.service", 3.0),
    ("edgecd-infer.service", 3.0),
    ("edgecd-agent.service", 2.0),
];

/// "→ Overall exposure level for edgecd-server.service: 1.1 OK 🙂" → 1.1.
fn overall_exposure(unit: &str, report: &str) -> Option<f64> {
    let key = format!("Overall exposure level for {unit}:");
    let rest = &report[report.find(&key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn overall_exposure_is_read_from_the_report() {
    let report = "✗ PrivateNetwork=   Service has access to the host's network   0.5\n\n\
                  → Overall exposure level for edgecd-agent.service: 8.4 EXPOSED 🙁\n";
    assert_eq!(overall_exposure("edgecd-agent.service", report), Some(8.4));
    assert_eq!(overall_exposure("edgecd-server.service", report), None);
}

/// Every unit in deploy/ passes `systemd-analyze verify` without a word (an unknown or
/// misspelt hardening key is only a warning to systemd, and would silently not apply), has a
/// `systemd-analyze security --offline=true` exposure within its bound, runs its binary with
/// arguments the binary accepts, and runs as users and groups deploy/edgecd.sysusers.conf
/// creates.
#[test]
fn units_are_valid_and_hardened() {
    let Some(analyze) = edgecd_testkit::tool("systemd-analyze") else {
        return;
    };
    let units: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(deploy_dir())
            .expect("deploy/")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".service"))
            .collect();
        v.sort();
        v
    };
    let bounded: Vec<&str> = EXPOSURE_BOUNDS.iter().map(|(u, _)| *u).collect();
    assert_eq!(units, {
        let mut b = bounded.clone();
        b.sort();
        b
    });

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut figures = Vec::new();
    for (unit, bound) in EXPOSURE_BOUNDS {
        let path = deploy_dir().join(unit);
        let text = std::fs::read_to_string(&path).expect("unit");

        let o = Command::new(&analyze)
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .expect("run systemd-analyze security");
        let report =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        let exposure = overall_exposure(unit, &report)
            .unwrap_or_else(|| panic!("no overall exposure for {unit} in:\n{report}"));
        figures.push(format!("{unit} {exposure}"));
        assert!(
            exposure <= bound,
            "{unit}: exposure {exposure} is above its bound {bound}:\n{report}"
        );

        // verify, with ExecStart= pointing at a binary that exists here.
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart="));
        let copy = tmp.path().join(unit);
        let (bin, args) = exec.split_once(' ').unwrap_or((exec, ""));
        std::fs::write(&copy, text.replace(bin, "/bin/true")).expect("write copy");
        let o = Command::new(&analyze)
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("run systemd-analyze verify");
        let said =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {unit}: {}\n{said}",
            o.status
        );

        // The binary takes the unit's arguments (those not from the environment file).
        let name = Path::new(bin).file_name().expect("binary name");
        let fixed: Vec<&str> = args
            .split_whitespace()
            .filter(|a| !a.starts_with('$'))
            .collect();
        let o = Command::new(sibling(&name.to_string_lossy()))
            .args(&fixed)
            .arg("--help")
            .output()
            .expect("run the unit's binary");
        assert!(
            o.status.success(),
            "{unit}: {} {fixed:?} --help: {}",
            name.to_string_lossy(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!("exposure: {}", figures.join(", "));

    // The users and groups the units name are the ones sysusers creates.
    let Some(sysusers) = edgecd_testkit::tool("systemd-sysusers") else {
        return;
    };
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("root/etc");
    let o = Command::new(sysusers)
        .arg(format!("--root={}", root.display()))
        .arg(deploy_dir().join("edgecd.sysusers.conf"))
        .output()
        .expect("run systemd-sysusers");
    assert_ok("systemd-sysusers deploy/edgecd.sysusers.conf", &o);
    let names = |file: &str| -> BTreeSet<String> {
        std::fs::read_to_string(root.join("etc").join(file))
            .expect("sysusers output")
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(str::to_string)
            .collect()
    };
    let (users, groups) = (names("passwd"), names("group"));
    for (unit, _) in EXPOSURE_BOUNDS {
        let text = std::fs::read_to_string(deploy_dir().join(unit)).expect("unit");
        for l in text.lines() {
            if let Some(u) = l.strip_prefix("User=") {
                assert!(users.contains(u), "{unit}: User={u} is not in {users:?}");
            }
            if let Some(g) = l.strip_prefix("Group=") {
                assert!(groups.contains(g), "{unit}: Group={g} is not in {groups:?}");
            }
        }
    }
}
