//! The server sits on the `Backend` seam: a runtime other than tract, plugged in through
//! `ServeConfig::backend`, gets the same readiness check, inference API, self-test and metrics.
//! The backend here is a test double (it multiplies its input by a factor), the server and its
//! HTTP are real.

mod common;

use common::*;
use edgecd_api::profile::{SelfTest, SelfTestCase, TensorData, Tolerance};
use edgecd_infer::model::InputSpec;
use edgecd_infer::{Backend, BackendModel, InferError};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::{DatumType, Tensor};

/// Loads any file; its models answer `factor · x` for an `x` of shape [?, 4], or fail.
#[derive(Debug, Default)]
struct ScaleBackend {
    factor: f32,
    fail: bool,
    /// Every model file it was asked to load, and the threads of the last run.
    loaded: Mutex<Vec<String>>,
    threads: Arc<AtomicUsize>,
}

struct ScaleModel {
    name: String,
    factor: f32,
    fail: bool,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    threads: Arc<AtomicUsize>,
}

impl Backend for ScaleBackend {
    fn runtime(&self) -> &'static str {
        "scale"
    }

    fn load(&self, path: &Path, name: &str) -> Result<Box<dyn BackendModel>, InferError> {
        assert!(path.is_file(), "{} is the model file", path.display());
        self.loaded.lock().unwrap().push(name.to_string());
        Ok(Box::new(ScaleModel {
            name: name.to_string(),
            factor: self.factor,
            fail: self.fail,
            inputs: vec![InputSpec {
                name: "x".into(),
                dtype: DatumType::F32,
                shape: vec![None, Some(4)],
                symbols: vec![Some("N".into()), None],
            }],
            outputs: vec!["y".into()],
            threads: self.threads.clone(),
        }))
    }
}

impl BackendModel for ScaleModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<Tensor>, threads: usize) -> Result<Vec<Tensor>, InferError> {
        self.threads.store(threads, Ordering::Relaxed);
        if self.fail {
            return Err(InferError::Execution("the accelerator is gone".into()));
        }
        let x = inputs[0]
            .cast_to::<f32>()
            .map_err(|e| InferError::Execution(e.to_string()))?;
        let y: Vec<f32> = x
            .to_plain_array_view::<f32>()
            .map_err(|e| InferError::Execution(e.to_string()))?
            .iter()
            .map(|v| v * self.factor)
            .collect();
        let t =
            Tensor::from_shape(x.shape(), &y).map_err(|e| InferError::Execution(e.to_string()))?;
        Ok(vec![t])
    }
}

fn tensor(name: &str, shape: Vec<usize>, data: Vec<f64>) -> TensorData {
    TensorData {
        name: name.into(),
        dtype: "float32".into(),
        shape,
        data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_backend_gets_the_same_api_metrics_and_selftest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let selftest = SelfTest {
        cases: vec![SelfTestCase {
            name: "triple".into(),
            model: "model.onnx".into(),
            inputs: vec![tensor("x", vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])],
            outputs: vec![tensor("y", vec![1, 4], vec![3.0, 6.0, 9.0, 12.0])],
        }],
        tolerance: Tolerance {
            abs: 1e-6,
            rel: 0.0,
        },
        latency_budget_ms: None,
    };
    // The file's bytes mean nothing to this backend; the profile is a real bundle's.
    write_bundle(&dir, "scaled", "2.0.0", b"not onnx", Some(selftest));
    let backend = Arc::new(ScaleBackend {
        factor: 3.0,
        ..Default::default()
    });
    let mut cfg = config(&dir, tmp.path().join("no-sensor"));
    cfg.backend = backend.clone();
    let server = edgecd_infer::start(cfg).await.unwrap();
    let a = server.addr;

    // Ready: the profile's self-test vectors passed through the backend.
    let r = http(a, "GET", "/readyz", &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["check"], "selftest");
    assert_eq!(r.json()["release"], "scaled@2.0.0");

    let r = post_infer(a, &[1.0, -2.0, 0.5, 4.0], 1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["outputs"][0]["name"], "y");
    assert_eq!(
        v["outputs"][0]["data"],
        serde_json::json!([3.0, -6.0, 1.5, 12.0])
    );
    assert_eq!(v["release"], "scaled@2.0.0");
    assert_eq!(
        backend.threads.load(Ordering::Relaxed),
        2,
        "the governor's thread count reaches the backend"
    );
    // Shape checks are the server's, before the backend runs.
    let r = post_infer(a, &[1.0, 2.0, 3.0], 1).await;
    assert_eq!(r.status, 400, "{}", r.text());

    let r = http(a, "POST", "/v1/selftest", &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["passed"], true);

    let m = http(a, "GET", "/metrics", &[], b"").await.unwrap().text();
    assert!(
        m.contains(
            "edgecd_infer_model_info{release=\"scaled@2.0.0\",model=\"model.onnx\",runtime=\"scale\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("edgecd_infer_requests_total 2\n"), "{m}");
    assert!(
        m.contains("edgecd_infer_request_duration_seconds_count 1\n"),
        "{m}"
    );
    assert!(
        !m.contains("edgecd_infer_plan_cache"),
        "no plan cache metrics for a backend without one: {m}"
    );
    edgecd_testkit::assert_promtool_clean(&m);
    assert_eq!(
        *backend.loaded.lock().unwrap(),
        vec!["model.onnx".to_string()]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_whose_model_fails_is_never_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(&dir, "broken", "1.0.0", b"whatever", None);
    let mut cfg = config(&dir, tmp.path().join("no-sensor"));
    cfg.backend = Arc::new(ScaleBackend {
        factor: 1.0,
        fail: true,
        ..Default::default()
    });
    let server = edgecd_infer::start(cfg).await.unwrap();
    let r = http(server.addr, "GET", "/readyz", &[], b"").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["check"], "generated");
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(e.contains("the accelerator is gone"), "{e}");
    let r = post_infer(server.addr, &[1.0, 2.0, 3.0, 4.0], 1).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["kind"], "model_failure");
    server.shutdown().await.unwrap();
}
