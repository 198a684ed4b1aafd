//! Provenance end to end with the real tools: a model registered in a real MLflow tracking
//! server (SQLite backend, on loopback) and one produced by a real DVC pipeline in a git
//! repository are built into bundles whose signed manifest, CycloneDX SBOM (validated by
//! cyclonedx-python-lib) and release manifest record the run, params, metrics, dataset
//! hashes and commit; `edgecd release show` prints the chain down to the devices.
mod common;

use edgecd_bundle::provenance::Provenance;
use edgecd_server::{Config, EmbeddedServer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// A process killed when dropped (the MLflow server).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn venv_tool(name: &str) -> Option<PathBuf> {
    edgecd_testkit::external(
        &format!("{name} (PyPI, in the test venv)"),
        edgecd_testkit::test_cache().join("venv/bin").join(name),
    )
}

/// An in-process server with the CI key trusted, one enrolled device running `app@version`.
struct Lab {
    srv: EmbeddedServer,
}

impl Lab {
    fn new(dir: &Path) -> Self {
        let mut cfg = Config::new(dir.join("server-data"));
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        Self {
            srv: EmbeddedServer::start(cfg).expect("server"),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.srv.addr)
    }

    fn cli(&self, dir: &Path, args: &[&str]) -> Output {
        common::edgecd()
            .current_dir(dir)
            .args(args)
            .env("EDGECD_SERVER", self.url())
            .env("EDGECD_TOKEN", &self.srv.admin_token)
            .env_remove("EDGECD_CA_CERT")
            .env_remove("MLFLOW_TRACKING_URI")
            .output()
            .expect("run edgecd")
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        common::succeeded(args, self.cli(dir, args))
    }

    /// Enrolls a device, assigns it the release and has it report that it runs it.
    fn device_running(&self, app: &str, version: &str, bundle_digest: &str) -> String {
        let admin = edgecd_agent::admin::AdminClient::new(&self.url(), &self.srv.admin_token, None)
            .expect("client");
        let token = admin
            .create_token(&Default::default())
            .expect("token")
            .token;
        let enroll = serde_json::json!({
            "token": token,
            "inventory": {"board": "rpi5", "ramMb": 4096, "runtimes": {"edgecd-infer": "0.1.0"}, "agentVersion": "test"},
            "labels": {"site": "lab"},
            "protocol": edgecd_api::protocol::PROTOCOL_VERSION,
        });
        let mut resp = ureq::post(format!("{}/api/v1/devices/enroll", self.url()))
            .header("content-type", "application/json")
            .send(enroll.to_string())
            .expect("enroll");
        let e: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        let (id, cred) = (
            e["deviceId"].as_str().unwrap().to_string(),
            e["credential"].as_str().unwrap().to_string(),
        );
        let _: Value = admin
            .send(
                "POST",
                "/api/v1/admin/deployments",
                &serde_json::json!({"app": app, "version": version, "selector": {"site": "lab"}}),
            )
            .expect("deploy");
        let checkin = serde_json::json!({
            "inventory": enroll["inventory"],
            "status": {"phase": "committed", "assignmentVersion": 1,
                       "running": {"app": app, "version": version, "bundleDigest": bundle_digest, "slot": "a"}},
            "labels": {"site": "lab"},
            "protocol": edgecd_api::protocol::PROTOCOL_VERSION,
        });
        let r = ureq::post(format!("{}/api/v1/devices/{id}/checkin", self.url()))
            .header("content-type", "application/json")
            .header("authorization", &format!("Bearer {cred}"))
            .send(checkin.to_string())
            .expect("checkin");
        assert!(r.status().is_success(), "checkin: {}", r.status());
        id
    }

    /// Signs the bundle in `out`, creates release.json, trusts the key, publishes.
    fn publish(&self, dir: &Path, out: &Path, bundle: &str) -> PathBuf {
        let key = out.join("ci");
        let k = key.to_str().unwrap();
        self.ok(dir, &["keygen", "--out", k]);
        let b = out.join(bundle);
        let b = b.to_str().unwrap();
        let release = out.join("release.json");
        self.ok(dir, &["bundle", "sign", b, "--key", &format!("{k}.key")]);
        self.ok(
            dir,
            &[
                "release",
                "create",
                "--bundle",
                b,
                "--key",
                &format!("{k}.key"),
                "--out",
                release.to_str().unwrap(),
            ],
        );
        self.ok(dir, &["keys", "trust", &format!("{k}.pub")]);
        self.ok(
            dir,
            &[
                "release",
                "publish",
                b,
                "--release-manifest",
                release.to_str().unwrap(),
            ],
        );
        release
    }
}

fn build_args<'a>(name: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "bundle",
        "build",
        "--name",
        name,
        "--version",
        "1.0.0",
        "--board",
        "rpi5",
        "--runtime",
        "edgecd-infer@0.1.0",
        "--out",
        out,
        "--json",
    ]
}

fn read_provenance(bundle: &Path) -> (Provenance, Value) {
    let s = edgecd_bundle::read_bundle(bundle, &mut |_| {}).expect("bundle reads");
    let p = Provenance::from_annotations(&s.manifest.annotations)
        .expect("provenance parses")
        .expect("bundle records provenance");
    let sbom: Value = serde_json::from_slice(s.sbom.as_ref().expect("sbom")).expect("sbom json");
    (p, sbom)
}

fn validate_sbom(python: &Path, path: &Path) {
    edgecd_testkit::run_py(
        python,
        &[
            common::py_script("edgecd-cli", "validate_sbom.py").as_os_str(),
            path.as_os_str(),
        ],
    );
}

fn workflow(sbom: &Value) -> &Value {
    &sbom["formulation"][0]["workflows"][0]
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn bundle_from_mlflow_records_run_params_metrics_and_datasets() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let Some(mlflow) = venv_tool("mlflow") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let port = edgecd_testkit::free_port();
    let log = std::fs::File::create(dir.join("mlflow.log")).expect("log");
    let _server = Killed(
        Command::new(&mlflow)
            .current_dir(dir)
            .args(["server", "--backend-store-uri"])
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mlflow server"),
    );
    let uri = format!("http://127.0.0.1:{port}");
    let model_bytes = edgecd_cli::demo_model::classifier_onnx(7);
    let model = dir.join("model.onnx");
    std::fs::write(&model, &model_bytes).unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    // The script imports mlflow while the server starts, then waits for it.
    let out = edgecd_testkit::run_py(
        &python,
        &[
            common::py_script("edgecd-cli", "mlflow_log.py").as_os_str(),
            uri.as_ref(),
            model.as_os_str(),
            commit.as_ref(),
        ],
    );
    let logged: Value =
        serde_json::from_str(out.lines().last().expect("output")).expect("logged run JSON");
    let run_id = logged["run_id"].as_str().unwrap();
    assert_eq!(logged["version"], "1");

    let lab = Lab::new(dir);
    let mut args = build_args("detector", "out");
    args.extend(["--from-mlflow", "models:/detector/1", "--mlflow-uri", &uri]);
    let built: Value = serde_json::from_str(&lab.ok(dir, &args)).expect("json");
    let bundle = dir.join("out/detector-1.0.0.edgecd");
    let (p, sbom) = read_provenance(&bundle);
    assert_eq!(built["provenance"], serde_json::to_value(&p).unwrap());
    let run = p.training_run.as_ref().expect("run");
    assert_eq!((run.system.as_str(), run.id.as_str()), ("mlflow", run_id));
    assert_eq!(run.name.as_deref(), Some("train-detector"));
    assert_eq!(run.model_uri.as_deref(), Some("models:/detector/1"));
    assert_eq!(run.params["lr"], "0.01");
    assert_eq!(run.params["epochs"], "3");
    assert_eq!(
        run.metrics["accuracy"].as_f64(),
        Some(0.875),
        "the latest value"
    );
    assert_eq!(run.metrics["loss"].as_f64(), Some(0.25));
    assert_eq!(p.git.as_ref().expect("git").commit, commit);
    assert_eq!(p.datasets.len(), 1, "{:?}", p.datasets);
    assert_eq!(p.datasets[0].path, "train-set");
    assert_eq!(
        p.datasets[0].hash,
        format!("mlflow:{}", logged["dataset_digest"].as_str().unwrap())
    );
    // The model bytes are the ones logged to MLflow.
    let s = edgecd_bundle::read_bundle(&bundle, &mut |_| {}).unwrap();
    assert_eq!(
        s.profile.models[0].digest,
        format!("sha256:{}", sha256_hex(&model_bytes))
    );
    // The SBOM: valid CycloneDX 1.6, the run as formulation, metrics in the model card.
    let sbom_path = dir.join("out/detector-1.0.0.cdx.json");
    validate_sbom(&python, &sbom_path);
    let wf = workflow(&sbom);
    assert_eq!(wf["uid"], run_id);
    let params = &wf["inputs"][1]["parameters"];
    assert!(
        params
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "lr", "value": "0.01"})),
        "{params}"
    );
    let card = &sbom["components"][0]["modelCard"];
    assert!(
        card["quantitativeAnalysis"]["performanceMetrics"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"type": "accuracy", "value": "0.875"})),
        "{card}"
    );
    assert_eq!(
        card["modelParameters"]["datasets"][0]["ref"],
        "data:train-set"
    );
    assert_eq!(
        sbom["metadata"]["component"]["pedigree"]["commits"][0]["uid"],
        commit
    );
    // Reproducible: the same model version builds the same bytes.
    let mut again = build_args("detector", "out2");
    again.extend(["--from-mlflow", "models:/detector/1", "--mlflow-uri", &uri]);
    lab.ok(dir, &again);
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(dir.join("out2/detector-1.0.0.edgecd")).unwrap()
    );
    // runs:/ URIs name the artifact directly.
    let mut by_run = build_args("detector", "out3");
    let run_uri = format!("runs:/{run_id}/model");
    by_run.extend(["--from-mlflow", &run_uri, "--mlflow-uri", &uri]);
    lab.ok(dir, &by_run);
    let (p3, _) = read_provenance(&dir.join("out3/detector-1.0.0.edgecd"));
    assert_eq!(p3.training_run.unwrap().id, run_id);
    // A version that does not exist: MLflow's answer, and nothing built.
    let mut missing = build_args("detector", "out4");
    missing.extend(["--from-mlflow", "models:/detector/9", "--mlflow-uri", &uri]);
    let err = String::from_utf8(lab.cli(dir, &missing).stderr).unwrap();
    assert!(
        err.contains("404") || err.contains("RESOURCE_DOES_NOT_EXIST") || err.contains("not found"),
        "{err}"
    );
    assert!(!dir.join("out4/detector-1.0.0.edgecd").exists());
    // Without a tracking server: said so.
    let err = String::from_utf8(
        lab.cli(dir, &{
            let mut a = build_args("detector", "out5");
            a.extend(["--from-mlflow", "models:/detector/1"]);
            a
        })
        .stderr,
    )
    .unwrap();
    assert!(err.contains("MLFLOW_TRACKING_URI"), "{err}");

    // Published, the chain: commit → run → datasets → bundle → key → devices.
    let release = lab.publish(dir, &dir.join("out"), "detector-1.0.0.edgecd");
    let rm: Value = serde_json::from_slice(&std::fs::read(&release).unwrap()).unwrap();
    assert_eq!(rm["provenance"]["trainingRun"]["id"], run_id);
    let device = lab.device_running("detector", "1.0.0", &s.digest);
    let chain: Value = serde_json::from_str(&lab.ok(
        dir,
        &[
            "release",
            "show",
            "detector@1.0.0",
            "--manifest",
            release.to_str().unwrap(),
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(chain["git"]["commit"], commit);
    assert_eq!(chain["trainingRun"]["id"], run_id);
    assert_eq!(chain["datasets"][0]["path"], "train-set");
    assert_eq!(chain["bundle"]["digest"], s.digest);
    let key_hint = edgecd_sign::VerifyingKey::load(&dir.join("out/ci.pub"))
        .unwrap()
        .hint();
    assert_eq!(chain["signature"]["keyId"], key_hint);
    assert_eq!(chain["devices"][0]["id"], device);
    assert_eq!(chain["devices"][0]["running"], true);
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(bytes))
}

#[test]
fn dvc_tracked_model_records_dataset_hashes_stage_and_commit() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let Some(dvc) = venv_tool("dvc") else {
        return;
    };
    let Some(git) = edgecd_testkit::tool("git") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    let in_repo = |prog: &Path, args: &[&str]| {
        let mut c = Command::new(prog);
        c.current_dir(&repo)
            .args(args)
            .env("DVC_NO_ANALYTICS", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    python.parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        run_ok(&mut c)
    };
    in_repo(&git, &["init", "-q", "-b", "main"]);
    in_repo(&dvc, &["init", "-q"]);
    let data = b"x,y\n1,0\n2,1\n3,1\n";
    std::fs::write(repo.join("data/train.csv"), data).unwrap();
    in_repo(&dvc, &["add", "-q", "data/train.csv"]);
    let model_bytes = edgecd_cli::demo_model::classifier_onnx(11);
    std::fs::write(repo.join("init.onnx"), &model_bytes).unwrap();
    std::fs::write(
        repo.join("train.py"),
        "import shutil\nopen('data/train.csv').read()\nshutil.copy('init.onnx', 'model.onnx')\n",
    )
    .unwrap();
    std::fs::write(repo.join("params.yaml"), "lr: 0.01\nepochs: 3\n").unwrap();
    in_repo(
        &dvc,
        &[
            "stage",
            "add",
            "-q",
            "-n",
            "train",
            "-d",
            "train.py",
            "-d",
            "init.onnx",
            "-d",
            "data/train.csv",
            "-p",
            "lr,epochs",
            "-o",
            "model.onnx",
            "python train.py",
        ],
    );
    in_repo(&dvc, &["repro", "-q"]);
    // A second model tracked by `dvc add` alone (other.onnx.dvc next to it).
    let other_bytes = edgecd_cli::demo_model::classifier_onnx(13);
    std::fs::write(repo.join("other.onnx"), &other_bytes).unwrap();
    in_repo(&dvc, &["add", "-q", "other.onnx"]);
    in_repo(&git, &["add", "-A"]);
    in_repo(&git, &["commit", "-q", "-m", "train"]);
    let commit = in_repo(&git, &["rev-parse", "HEAD"]).trim().to_string();

    let lab = Lab::new(dir);
    let model = repo.join("model.onnx");
    let mut args = build_args("classifier", "out");
    args.extend(["--model", model.to_str().unwrap()]);
    let built: Value = serde_json::from_str(&lab.ok(dir, &args)).expect("json");
    let bundle = dir.join("out/classifier-1.0.0.edgecd");
    let (p, sbom) = read_provenance(&bundle);
    assert_eq!(built["provenance"], serde_json::to_value(&p).unwrap());
    let g = p.git.as_ref().expect("git");
    assert_eq!((g.commit.as_str(), g.dirty), (commit.as_str(), false));
    let run = p.training_run.as_ref().expect("stage");
    assert_eq!((run.system.as_str(), run.id.as_str()), ("dvc", "train"));
    assert_eq!(run.command.as_deref(), Some("python train.py"));
    assert_eq!(run.params["lr"], "0.01");
    assert_eq!(run.params["epochs"], "3");
    // Only the DVC-tracked data is a dataset; train.py and init.onnx are in git.
    assert_eq!(p.datasets.len(), 1, "{:?}", p.datasets);
    assert_eq!(p.datasets[0].path, "data/train.csv");
    assert_eq!(p.datasets[0].hash, format!("md5:{}", md5_hex(data)));
    assert_eq!(p.datasets[0].size, Some(data.len() as u64));
    assert_eq!(p.models[0].path, "model.onnx");
    assert_eq!(p.models[0].hash, format!("md5:{}", md5_hex(&model_bytes)));
    // The SBOM: a data component with the MD5, the stage as formulation, the commit.
    validate_sbom(&python, &dir.join("out/classifier-1.0.0.cdx.json"));
    let data_c = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "data")
        .expect("data component");
    assert_eq!(data_c["name"], "data/train.csv");
    assert_eq!(
        data_c["hashes"][0],
        serde_json::json!({"alg": "MD5", "content": md5_hex(data)})
    );
    assert_eq!(data_c["data"][0]["type"], "dataset");
    let wf = workflow(&sbom);
    assert_eq!(wf["uid"], "train");
    assert_eq!(wf["inputs"][0]["resource"]["ref"], "data:data/train.csv");
    assert_eq!(wf["outputs"][0]["resource"]["ref"], "model:model.onnx");
    assert!(
        wf["properties"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "edgecd:git-commit", "value": commit}))
    );
    // `bundle inspect` shows it.
    let inspected = lab.ok(dir, &["bundle", "inspect", bundle.to_str().unwrap()]);
    assert!(inspected.contains("training run dvc train"), "{inspected}");
    assert!(
        inspected.contains(&format!("git commit   {commit}")),
        "{inspected}"
    );
    // Reproducible bit for bit.
    let mut again = build_args("classifier", "out2");
    again.extend(["--model", model.to_str().unwrap()]);
    lab.ok(dir, &again);
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(dir.join("out2/classifier-1.0.0.edgecd")).unwrap()
    );

    // The `dvc add`ed model: its md5 and the commit, no stage and no datasets.
    let mut add_only = build_args("other", "out-other");
    let other = repo.join("other.onnx");
    add_only.extend(["--model", other.to_str().unwrap()]);
    lab.ok(dir, &add_only);
    let (po, _) = read_provenance(&dir.join("out-other/other-1.0.0.edgecd"));
    assert_eq!(po.git.as_ref().unwrap().commit, commit);
    assert!(
        po.training_run.is_none() && po.datasets.is_empty(),
        "{po:?}"
    );
    assert_eq!(po.models[0].path, "other.onnx");
    assert_eq!(po.models[0].hash, format!("md5:{}", md5_hex(&other_bytes)));

    // Release manifest: carries the provenance, verifies, and `release show` prints the chain.
    let release = lab.publish(dir, &dir.join("out"), "classifier-1.0.0.edgecd");
    let rm: Value = serde_json::from_slice(&std::fs::read(&release).unwrap()).unwrap();
    assert_eq!(rm["provenance"]["git"]["commit"], commit.as_str());
    lab.ok(
        dir,
        &[
            "release",
            "verify",
            release.to_str().unwrap(),
            "--key",
            dir.join("out/ci.pub").to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    );
    // For agents older than the field: left out of release.json, still verifying.
    let old_style = dir.join("out/release-old.json");
    let ci_key = dir.join("out/ci.key");
    lab.ok(
        dir,
        &[
            "release",
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            ci_key.to_str().unwrap(),
            "--no-provenance",
            "--out",
            old_style.to_str().unwrap(),
        ],
    );
    assert!(
        !std::fs::read_to_string(&old_style)
            .unwrap()
            .contains("provenance")
    );
    lab.ok(
        dir,
        &[
            "release",
            "verify",
            old_style.to_str().unwrap(),
            "--key",
            dir.join("out/ci.pub").to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    );
    let s = edgecd_bundle::read_bundle(&bundle, &mut |_| {}).unwrap();
    let device = lab.device_running("classifier", "1.0.0", &s.digest);
    let text = lab.ok(
        dir,
        &[
            "release",
            "show",
            "classifier@1.0.0",
            "--manifest",
            release.to_str().unwrap(),
        ],
    );
    let key_hint = edgecd_sign::VerifyingKey::load(&dir.join("out/ci.pub"))
        .unwrap()
        .hint();
    let order = [
        commit.clone(),
        "training run dvc train".into(),
        format!("data/train.csv md5:{}", md5_hex(data)),
        s.digest.clone(),
        format!("key {key_hint}"),
        format!("{device} running"),
    ];
    let mut at = 0;
    for want in &order {
        let i = text[at..]
            .find(want.as_str())
            .unwrap_or_else(|| panic!("{want:?} (in order) in:\n{text}"));
        at += i + want.len();
    }
    // Another file than the published manifest is refused.
    let other = dir.join("other.json");
    std::fs::write(&other, b"{}").unwrap();
    let err = String::from_utf8(
        lab.cli(
            dir,
            &[
                "release",
                "show",
                "classifier@1.0.0",
                "--manifest",
                other.to_str().unwrap(),
            ],
        )
        .stderr,
    )
    .unwrap();
    assert!(
        err.contains("is not the release manifest the server published"),
        "{err}"
    );

    // A model changed since `dvc repro`: refused, saying what to run; nothing built.
    std::fs::write(&model, edgecd_cli::demo_model::classifier_onnx(12)).unwrap();
    let mut stale = build_args("classifier", "out3");
    stale.extend(["--model", model.to_str().unwrap()]);
    let err = String::from_utf8(lab.cli(dir, &stale).stderr).unwrap();
    assert!(
        err.contains("dvc repro") && err.contains("dvc.lock"),
        "{err}"
    );
    assert!(!dir.join("out3/classifier-1.0.0.edgecd").exists());
}

#[test]
fn bundles_without_provenance_are_unchanged() {
    // A plain model outside any DVC repository: no provenance annotation, no release field,
    // no SBOM formulation — the format older edgecd versions read and wrote.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::write(
        dir.join("m.onnx"),
        edgecd_cli::demo_model::classifier_onnx(3),
    )
    .unwrap();
    let mut args = build_args("plain", "out");
    args.extend(["--model", "m.onnx"]);
    let built: Value = serde_json::from_str(&common::ok(dir, &args)).unwrap();
    assert_eq!(built["provenance"], Value::Null);
    let s = edgecd_bundle::read_bundle(&dir.join("out/plain-1.0.0.edgecd"), &mut |_| {}).unwrap();
    assert_eq!(
        s.manifest.annotations.keys().collect::<Vec<_>>(),
        [
            "org.opencontainers.image.title",
            "org.opencontainers.image.version"
        ]
    );
    let sbom: Value = serde_json::from_slice(s.sbom.as_ref().unwrap()).unwrap();
    assert!(sbom.get("formulation").is_none());
    let key = dir.join("k");
    common::ok(dir, &["keygen", "--out", key.to_str().unwrap()]);
    common::ok(
        dir,
        &[
            "release",
            "create",
            "--bundle",
            "out/plain-1.0.0.edgecd",
            "--key",
            "k.key",
            "--out",
            "release.json",
        ],
    );
    let text = std::fs::read_to_string(dir.join("release.json")).unwrap();
    assert!(!text.contains("provenance"), "{text}");
}
