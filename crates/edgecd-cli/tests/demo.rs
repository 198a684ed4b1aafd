//! `edgecd demo` runs end to end and its exit code says whether the story came out right.
mod common;

#[test]
fn demo_runs_and_keeps_its_files() {
    let t = tempfile::tempdir().unwrap();
    let keep = t.path().join("demo");
    let out = common::ok(t.path(), &["demo", "--keep", keep.to_str().unwrap()]);
    assert!(
        out.contains("refused a bundle with one flipped model byte"),
        "{out}"
    );
    assert!(
        out.contains("refused a bundle checked against an untrusted key"),
        "{out}"
    );
    assert!(out.contains("demo complete"), "{out}");
    assert!(
        out.contains("completed") && out.contains("all back on 1.0.0"),
        "rollout story: {out}"
    );
    assert!(
        out.contains("FAIL: "),
        "the failing gate and its numbers are shown: {out}"
    );
    // Each gate value comes with its confidence interval: latencies in ms, rates in percent.
    assert!(
        out.contains(" ms [") && out.contains("% ["),
        "gate values are shown with their intervals: {out}"
    );
    for v in ["1.0.0", "1.1.0"] {
        let b = keep.join(format!("dist/receipt-classifier-{v}.edgecd"));
        common::ok(
            t.path(),
            &[
                "bundle",
                "verify",
                b.to_str().unwrap(),
                "--key",
                keep.join("keys/release.pub").to_str().unwrap(),
            ],
        );
    }
}
