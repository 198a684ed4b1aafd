//! The HTTP API on a real socket: JSON and .npy inference, error counting, hot reload under
//! load, the thermal governor's 429, self-test, promtool on live metrics, startup failures.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const B1: [f32; 3] = [0.0, 0.0, 0.0];
const B2: [f32; 3] = [10.0, 20.0, 30.0];

fn logits_of(reply: &Reply) -> Vec<f64> {
    let v = reply.json();
    v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_json_and_npy_and_counts_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(&dir, "tiny", "1.0.0", &tiny_classifier(B1), None);
    let server = edgecd_infer::start(config(&dir, tmp.path().join("no-sensor")))
        .await
        .unwrap();
    let a = server.addr;

    assert_eq!(
        http(a, "GET", "/healthz", &[], b"").await.unwrap().status,
        200
    );
    let ready = http(a, "GET", "/readyz", &[], b"").await.unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["release"], "tiny@1.0.0");

    // JSON, batch of two rows (symbolic batch dimension).
    let x = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/json")],
        &infer_body(&x, 2),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["outputs"][0]["name"], "logits");
    assert_eq!(v["outputs"][0]["dtype"], "float32");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([2, 3]));
    let got = logits_of(&r);
    for (g, w) in got.iter().zip(expected_logits(&x, B1)) {
        assert!((g - f64::from(w)).abs() < 1e-5, "{got:?}");
    }

    // .npy in, .npy out.
    let t = tract_onnx::prelude::Tensor::from_shape(&[1, 4], &x[..4]).unwrap();
    let body = edgecd_infer::npy::write_npy(&t).unwrap();
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[
            ("Content-Type", "application/x-npy"),
            ("Accept", "application/x-npy"),
        ],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-npy"));
    let out = edgecd_infer::npy::read_npy(&r.body).unwrap();
    assert_eq!(out.shape(), &[1, 3]);
    let want = expected_logits(&x[..4], B1);
    let got: Vec<f32> = out
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5);
    }
    // .npy in, JSON out (no Accept).
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/x-npy")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(logits_of(&r).len(), 3);

    // Malformed requests: 400, counted.
    let bad: [&[u8]; 4] = [
        b"{not json",
        br#"{"inputs":[{"name":"x","dtype":"float32","shape":[1,5],"data":[1,2,3,4,5]}]}"#,
        br#"{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[1,2,3]}]}"#,
        br#"{"inputs":[{"name":"y","dtype":"float32","shape":[1,4],"data":[1,2,3,4]}]}"#,
    ];
    for b in bad {
        let r = http(
            a,
            "POST",
            "/v1/infer",
            &[("Content-Type", "application/json")],
            b,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["kind"], "malformed_input");
    }
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/x-npy")],
        b"garbage",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);

    let m = http(a, "GET", "/metrics", &[], b"").await.unwrap().text();
    assert!(m.contains("edgecd_infer_requests_total 8\n"), "{m}");
    assert!(
        m.contains("edgecd_infer_request_errors_total{kind=\"malformed_input\"} 5\n"),
        "{m}"
    );
    assert!(
        m.contains("edgecd_infer_request_duration_seconds_count 3\n"),
        "{m}"
    );
    assert!(m.contains("edgecd_infer_confidence_count 4\n"), "{m}");
    assert!(m.contains("edgecd_infer_model_info{release=\"tiny@1.0.0\",model=\"model.onnx\",runtime=\"tract\"} 1"), "{m}");
    assert!(m.contains("edgecd_infer_threads 2\n"), "{m}");
    server.shutdown().await.unwrap();
}

/// `application/octet-stream` bodies: the tensor's raw bytes with `X-Tensor-Shape` and
/// `X-Tensor-Dtype` (default the model input's type); raw bytes back with the same headers
/// under `Accept: application/octet-stream`; each mismatch a 400 saying what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_raw_tensors_with_shape_and_dtype_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(&dir, "tiny", "1.0.0", &tiny_classifier(B1), None);
    let server = edgecd_infer::start(config(&dir, tmp.path().join("no-sensor")))
        .await
        .unwrap();
    let a = server.addr;
    let x = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
    let f32_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let octet = ("Content-Type", "application/octet-stream");

    // Raw in (dtype from the model), JSON out.
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[octet, ("X-Tensor-Shape", "2,4")],
        &f32_bytes,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for (g, w) in logits_of(&r).iter().zip(expected_logits(&x, B1)) {
        assert!((g - f64::from(w)).abs() < 1e-5);
    }

    // float64 in (converted like JSON), raw out with its headers.
    let f64_bytes: Vec<u8> = x[..4]
        .iter()
        .flat_map(|v| f64::from(*v).to_le_bytes())
        .collect();
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[
            octet,
            ("X-Tensor-Shape", "1x4"),
            ("X-Tensor-Dtype", "float64"),
            ("Accept", "application/octet-stream"),
        ],
        &f64_bytes,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-tensor-shape"), Some("1,3"));
    assert_eq!(r.header("x-tensor-dtype"), Some("float32"));
    assert_eq!(r.header("x-tensor-name"), Some("logits"));
    let got: Vec<f32> = r
        .body
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want = expected_logits(&x[..4], B1);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }

    // Mismatches: 400, with what is wrong.
    // (request headers, body, what the error says)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], &'a str);
    let cases: [Case; 5] = [
        (&[octet], &f32_bytes, "x-tensor-shape header"),
        (
            &[octet, ("X-Tensor-Shape", "2,four")],
            &f32_bytes,
            "is not a shape",
        ),
        (
            &[
                octet,
                ("X-Tensor-Shape", "2,4"),
                ("X-Tensor-Dtype", "float128"),
            ],
            &f32_bytes,
            "is not a type",
        ),
        (&[octet, ("X-Tensor-Shape", "3,4")], &f32_bytes, "needs 48"),
        (
            &[octet, ("X-Tensor-Shape", "1,8")],
            &f32_bytes,
            "the model wants [?, 4]",
        ),
    ];
    for (headers, body, says) in cases {
        let r = http(a, "POST", "/v1/infer", headers, body).await.unwrap();
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
        assert_eq!(r.json()["kind"], "malformed_input");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(says), "{headers:?}: {e}");
    }
    let m = http(a, "GET", "/metrics", &[], b"").await.unwrap().text();
    assert!(
        m.contains("edgecd_infer_request_errors_total{kind=\"malformed_input\"} 5\n"),
        "{m}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_loses_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir, bad_dir) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("bad"),
    );
    write_bundle(&a_dir, "tiny", "1.0.0", &tiny_classifier(B1), None);
    write_bundle(&b_dir, "tiny", "2.0.0", &tiny_classifier(B2), None);
    write_bundle(
        &bad_dir,
        "tiny",
        "3.0.0",
        b"\x08\x07 this is not a model",
        None,
    );
    let current = tmp.path().join("current");
    swap_symlink(&current, &a_dir);
    let mut cfg = config(&current, tmp.path().join("no-sensor"));
    cfg.max_concurrency = 4;
    let server = edgecd_infer::start(cfg).await.unwrap();
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (stop, ok) = (stop.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let x = [c as f32, 1.0, 2.0, 3.0];
            let mut releases = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = http(
                    addr,
                    "POST",
                    "/v1/infer",
                    &[("Content-Type", "application/json")],
                    &infer_body(&x, 1),
                )
                .await
                .expect("request lost");
                assert_eq!(r.status, 200, "request failed during reload: {}", r.text());
                let v = r.json();
                let release = v["release"].as_str().unwrap().to_string();
                let bias = if release == "tiny@1.0.0" { B1 } else { B2 };
                let got = logits_of(&r);
                for (g, w) in got.iter().zip(expected_logits(&x, bias)) {
                    assert!(
                        (g - f64::from(w)).abs() < 1e-4,
                        "answer of {release} does not match its model"
                    );
                }
                ok.fetch_add(1, Ordering::Relaxed);
                if releases.last() != Some(&release) {
                    releases.push(release);
                }
            }
            releases
        }));
    }
    let wait_for = |n: usize| {
        let ok = ok.clone();
        async move {
            while ok.load(Ordering::Relaxed) < n {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(30).await;
    swap_symlink(&current, &b_dir);
    let r = http(addr, "POST", "/v1/reload", &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["release"], "tiny@2.0.0");
    assert_eq!(r.json()["previous"], "tiny@1.0.0");
    let before_bad = ok.load(Ordering::Relaxed);
    wait_for(before_bad + 30).await;

    // A corrupt model: the reload fails with the reason and 2.0.0 keeps serving.
    swap_symlink(&current, &bad_dir);
    let r = http(addr, "POST", "/v1/reload", &[], b"").await.unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["release"], "tiny@2.0.0");
    assert!(
        r.json()["error"].as_str().unwrap().contains("model.onnx"),
        "{}",
        r.text()
    );
    // And a model with an unsupported operator.
    write_bundle(&bad_dir, "tiny", "3.0.0", &unsupported_model(), None);
    let r = http(addr, "POST", "/v1/reload", &[], b"").await.unwrap();
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"].as_str().unwrap().contains("FrobnicateOp"),
        "{}",
        r.text()
    );
    let after_bad = ok.load(Ordering::Relaxed);
    wait_for(after_bad + 30).await;

    stop.store(true, Ordering::Relaxed);
    let mut saw_both = 0;
    for c in clients {
        let releases = c.await.expect("a client saw a failed or lost request");
        assert_eq!(releases.last().map(String::as_str), Some("tiny@2.0.0"));
        assert!(releases.len() <= 2, "never goes back: {releases:?}");
        saw_both += usize::from(releases.len() == 2);
    }
    assert!(saw_both > 0);
    // 2.0.0 still answers, but what is installed (3.0.0) is not what serves: not ready.
    let ready = http(addr, "GET", "/readyz", &[], b"").await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["ready"], false);
    assert_eq!(ready.json()["release"], "tiny@2.0.0");
    let m = http(addr, "GET", "/metrics", &[], b"")
        .await
        .unwrap()
        .text();
    assert!(
        m.contains("edgecd_infer_reloads_total{result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("edgecd_infer_reloads_total{result=\"failed\"} 2\n"),
        "{m}"
    );
    assert!(m.contains("release=\"tiny@2.0.0\""), "{m}");
    assert!(
        m.contains("edgecd_infer_request_errors_total{kind=\"model_failure\"} 0\n"),
        "{m}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governor_sheds_load_with_a_fake_thermal_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(&dir, "tiny", "1.0.0", &tiny_classifier(B1), None);
    let thermal = tmp.path().join("temp");
    std::fs::write(&thermal, "90000\n").unwrap();
    let mut cfg = config(&dir, thermal.clone());
    cfg.retry_after_secs = 7;
    let server = edgecd_infer::start(cfg).await.unwrap();
    let a = server.addr;
    let body = infer_body(&[1.0, 2.0, 3.0, 4.0], 1);

    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(
        http(a, "GET", "/readyz", &[], b"").await.unwrap().status,
        503
    );
    assert_eq!(
        http(a, "GET", "/healthz", &[], b"").await.unwrap().status,
        200
    );
    let m = http(a, "GET", "/metrics", &[], b"").await.unwrap().text();
    assert!(m.contains("edgecd_infer_governor_state 2\n"), "{m}");
    assert!(m.contains("edgecd_infer_temperature_celsius 90\n"), "{m}");
    assert!(
        m.contains("edgecd_infer_request_errors_total{kind=\"overloaded\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("edgecd_infer_threads 1\n"), "{m}");

    // 82 °C is inside the hysteresis band under the hard limit (85): still shedding.
    std::fs::write(&thermal, "82000\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429);

    // 77 °C: throttled (fewer threads) but serving.
    std::fs::write(&thermal, "77000\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let r = http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let m = http(a, "GET", "/metrics", &[], b"").await.unwrap().text();
    assert!(m.contains("edgecd_infer_governor_state 1\n"), "{m}");
    assert!(m.contains("edgecd_infer_threads 1\n"), "{m}");

    // Cool: back to normal with all threads.
    std::fs::write(&thermal, "50000\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let m = http(a, "GET", "/metrics", &[], b"").await.unwrap().text();
    assert!(m.contains("edgecd_infer_governor_state 0\n"), "{m}");
    assert!(m.contains("edgecd_infer_threads 2\n"), "{m}");
    assert!(
        m.contains("edgecd_infer_governor_transitions_total 3\n"),
        "{m}"
    );
    assert_eq!(
        http(a, "GET", "/readyz", &[], b"").await.unwrap().status,
        200
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_passes_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let model_file = tmp.path().join("model.onnx");
    std::fs::write(&model_file, tiny_classifier(B1)).unwrap();
    let st = edgecd_infer::record_selftest(&model_file, 3, 42).unwrap();
    assert_eq!(st.cases.len(), 3);
    assert_eq!(
        st.cases[0].inputs[0].shape,
        vec![1, 4],
        "symbolic batch recorded as 1"
    );
    assert_eq!(st.cases[0].model, "model.onnx");
    assert_eq!(
        st,
        edgecd_infer::record_selftest(&model_file, 3, 42)
            .unwrap()
            .clone_with_budget(&st),
        "deterministic"
    );
    assert_ne!(
        st.cases[0].inputs,
        edgecd_infer::record_selftest(&model_file, 1, 43)
            .unwrap()
            .cases[0]
            .inputs
    );
    for c in &st.cases {
        let x: Vec<f32> = c.inputs[0].data.iter().map(|v| *v as f32).collect();
        for (g, w) in c.outputs[0].data.iter().zip(expected_logits(&x, B1)) {
            assert!((g - f64::from(w)).abs() < 1e-5);
        }
    }

    let good = tmp.path().join("good");
    write_bundle(
        &good,
        "tiny",
        "1.0.0",
        &tiny_classifier(B1),
        Some(st.clone()),
    );
    let server = edgecd_infer::start(config(&good, tmp.path().join("no-sensor")))
        .await
        .unwrap();
    let r = http(server.addr, "POST", "/v1/selftest", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["passed"], true);
    assert_eq!(v["cases"].as_array().unwrap().len(), 3);
    assert!(v["cases"][0]["maxAbsError"].as_f64().unwrap() < 1e-5);
    assert!(v["cases"][0]["latencyMs"].as_f64().unwrap() > 0.0);
    server.shutdown().await.unwrap();

    // The same vectors against a model with different weights: 422 with the error per case.
    let bad = tmp.path().join("bad");
    write_bundle(
        &bad,
        "tiny",
        "1.0.1",
        &tiny_classifier(B2),
        Some(st.clone()),
    );
    let server = edgecd_infer::start(config(&bad, tmp.path().join("no-sensor")))
        .await
        .unwrap();
    let r = http(server.addr, "POST", "/v1/selftest", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    let v = r.json();
    assert_eq!(v["passed"], false);
    assert!((v["cases"][0]["maxAbsError"].as_f64().unwrap() - 30.0).abs() < 1e-3);
    server.shutdown().await.unwrap();

    // A latency budget nothing can meet.
    let mut slow = st;
    slow.latency_budget_ms = Some(0.0);
    let tight = tmp.path().join("tight");
    write_bundle(&tight, "tiny", "1.0.2", &tiny_classifier(B1), Some(slow));
    let server = edgecd_infer::start(config(&tight, tmp.path().join("no-sensor")))
        .await
        .unwrap();
    let r = http(server.addr, "POST", "/v1/selftest", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 422);
    assert!(
        r.json()["cases"][0]["error"]
            .as_str()
            .unwrap()
            .contains("latency"),
        "{}",
        r.text()
    );
    server.shutdown().await.unwrap();
}

/// `record_selftest` measures latency, so two recordings differ only in the budget.
trait CloneWithBudget {
    fn clone_with_budget(&self, other: &Self) -> Self;
}
impl CloneWithBudget for edgecd_api::profile::SelfTest {
    fn clone_with_budget(&self, other: &Self) -> Self {
        let mut s = self.clone();
        s.latency_budget_ms = other.latency_budget_ms;
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_live_metrics() {
    if edgecd_testkit::tool("promtool").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(&dir, "tiny \"quoted\"", "1.0.0", &tiny_classifier(B1), None);
    let thermal = tmp.path().join("temp");
    std::fs::write(&thermal, "48500").unwrap();
    let server = edgecd_infer::start(config(&dir, thermal)).await.unwrap();
    let a = server.addr;
    for _ in 0..3 {
        http(
            a,
            "POST",
            "/v1/infer",
            &[("Content-Type", "application/json")],
            &infer_body(&[1.0, 2.0, 3.0, 4.0], 1),
        )
        .await
        .unwrap();
    }
    http(
        a,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/json")],
        b"{",
    )
    .await
    .unwrap();
    let r = http(a, "GET", "/metrics", &[], b"").await.unwrap();
    assert_eq!(
        r.header("content-type"),
        Some(edgecd_infer::metrics::CONTENT_TYPE)
    );
    server.shutdown().await.unwrap();
    edgecd_testkit::assert_promtool_clean(&r.text());
}

#[tokio::test]
async fn startup_fails_cleanly_on_unsupported_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(&dir, "frob", "1.0.0", &unsupported_model(), None);
    let err = edgecd_infer::Engine::load(&dir, None).unwrap_err();
    assert!(
        matches!(&err, edgecd_infer::InferError::UnsupportedOperator { operator, .. } if operator == "FrobnicateOp"),
        "{err}"
    );
    assert!(
        edgecd_infer::start(config(&dir, tmp.path().join("t")))
            .await
            .is_err()
    );

    // The binary: non-zero exit and a message naming the operator.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecd-infer"))
        .args([
            "--model-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unsupported operator FrobnicateOp"),
        "{stderr}"
    );

    // A missing profile and an unknown --model are clean errors too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecd-infer"))
        .args(["--model-dir", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile.json"));
    write_bundle(&dir, "tiny", "1.0.0", &tiny_classifier(B1), None);
    let err = edgecd_infer::Engine::load(&dir, Some("other.onnx")).unwrap_err();
    assert!(err.to_string().contains("other.onnx"), "{err}");
    assert!(edgecd_infer::Engine::load(&dir, Some("model")).is_ok());
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let r = http(addr, "GET", "/readyz", &[], b"").await.unwrap();
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_a_real_inference() {
    let tmp = tempfile::tempdir().unwrap();
    let sensor = tmp.path().join("no-sensor");
    let model_file = tmp.path().join("model.onnx");
    std::fs::write(&model_file, tiny_classifier(B1)).unwrap();
    let st = edgecd_infer::record_selftest(&model_file, 2, 5).unwrap();

    // A normal model with vectors: checked with them.
    let good = tmp.path().join("good");
    write_bundle(
        &good,
        "tiny",
        "1.0.0",
        &tiny_classifier(B1),
        Some(st.clone()),
    );
    let server = edgecd_infer::start(config(&good, sensor.clone()))
        .await
        .unwrap();
    let (status, v) = readyz(server.addr).await;
    assert_eq!(
        (status, &v["ready"], &v["check"]),
        (
            200,
            &serde_json::json!(true),
            &serde_json::json!("selftest")
        ),
        "{v}"
    );
    server.shutdown().await.unwrap();

    // Without vectors: checked with a generated input.
    let plain = tmp.path().join("plain");
    write_bundle(&plain, "tiny", "1.0.1", &tiny_classifier(B1), None);
    let server = edgecd_infer::start(config(&plain, sensor.clone()))
        .await
        .unwrap();
    let (status, v) = readyz(server.addr).await;
    assert_eq!(
        (status, &v["check"]),
        (200, &serde_json::json!("generated")),
        "{v}"
    );
    server.shutdown().await.unwrap();

    // Vectors the model does not reproduce (other weights): never ready.
    let wrong = tmp.path().join("wrong");
    write_bundle(&wrong, "tiny", "1.0.2", &tiny_classifier(B2), Some(st));
    let server = edgecd_infer::start(config(&wrong, sensor.clone()))
        .await
        .unwrap();
    let (status, v) = readyz(server.addr).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["ready"], false);
    assert!(v["error"].as_str().unwrap().contains("self-test"), "{v}");
    server.shutdown().await.unwrap();

    // A model that loads but fails at run time: the server listens (healthz, metrics) and
    // says why it is not ready; a request fails the same way.
    let broken = tmp.path().join("broken");
    write_bundle(&broken, "oob", "1.0.0", &gather_out_of_bounds_model(), None);
    let server = edgecd_infer::start(config(&broken, sensor.clone()))
        .await
        .unwrap();
    let a = server.addr;
    let (status, v) = readyz(a).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        (&v["ready"], &v["check"]),
        (&serde_json::json!(false), &serde_json::json!("generated")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("model.onnx"), "{v}");
    assert_eq!(
        http(a, "GET", "/healthz", &[], b"").await.unwrap().status,
        200
    );
    let r = post_infer(a, &[1.0, 2.0, 3.0, 4.0], 1).await;
    assert_eq!(r.status, 500, "{}", r.text());
    server.shutdown().await.unwrap();

    // Reloading into it: refused, the old model keeps answering, and the server is not ready
    // until a reload succeeds.
    let current = tmp.path().join("current");
    swap_symlink(&current, &plain);
    let server = edgecd_infer::start(config(&current, sensor)).await.unwrap();
    let a = server.addr;
    assert_eq!(readyz(a).await.0, 200);
    swap_symlink(&current, &broken);
    let r = http(a, "POST", "/v1/reload", &[], b"").await.unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("oob@1.0.0"),
        "{}",
        r.text()
    );
    let (status, v) = readyz(a).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["release"], "tiny@1.0.1");
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let r = post_infer(a, &x, 1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    swap_symlink(&current, &plain);
    let r = http(a, "POST", "/v1/reload", &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, v) = readyz(a).await;
    assert_eq!(
        (status, &v["ready"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    server.shutdown().await.unwrap();
}
