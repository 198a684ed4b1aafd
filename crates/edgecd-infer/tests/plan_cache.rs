//! The per-shape plan cache is bounded by bytes, not by a count of plans: on a real model that
//! needs one plan per input shape (PP-OCRv4 det, from the rapidocr wheel), a budget that holds
//! two plans evicts the least recently used one for a third shape, and a shape used again is
//! not compiled again.

use edgecd_infer::Model;
use edgecd_infer::plan_cache::PlanCounters;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tract_onnx::prelude::Tensor;

fn det_model(into: &std::path::Path) -> Option<std::path::PathBuf> {
    let python = edgecd_testkit::python()?;
    let wheels = edgecd_testkit::wheels_dir()?;
    edgecd_testkit::ppocr_models(&python, &wheels, into)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("det"))
}

fn image(h: usize, w: usize) -> Tensor {
    let values: Vec<f32> = (0..3 * h * w)
        .map(|i| (i % 17) as f32 / 17.0 - 0.5)
        .collect();
    Tensor::from_shape(&[1, 3, h, w], &values).unwrap()
}

#[test]
fn plans_are_evicted_by_bytes_and_reused_without_recompiling() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(det) = det_model(tmp.path()) else {
        return;
    };
    let (a, b, c) = ((32, 32), (32, 64), (64, 32));

    // How big one plan is: the same model with room for everything.
    let roomy = Model::load_with(&det, "det", u64::MAX, Arc::default()).unwrap();
    let mut sizes = Vec::new();
    for (h, w) in [a, b, c] {
        let before = roomy.plan_cache_stats().bytes;
        roomy.run(vec![image(h, w)], 1).unwrap();
        sizes.push(roomy.plan_cache_stats().bytes - before);
    }
    assert!(
        sizes.iter().all(|s| *s > 1 << 20),
        "a det plan holds its packed weights (MBs): {sizes:?}"
    );
    let roomy_stats = roomy.plan_cache_stats();
    assert_eq!((roomy_stats.plans, roomy_stats.evictions_total), (3, 0));

    // Room for a and b, not for a third plan.
    let budget = sizes[0] + sizes[1] + sizes[2] / 2;
    eprintln!("det plan sizes {sizes:?} bytes; budget {budget}");
    let counters = Arc::new(PlanCounters::default());
    let model = Model::load_with(&det, "det", budget, counters.clone()).unwrap();
    let built = || counters.built.load(Ordering::Relaxed);
    let evictions = || counters.evictions.load(Ordering::Relaxed);
    let run = |(h, w): (usize, usize)| {
        let out = model.run(vec![image(h, w)], 1).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, h, w], "det's probability map");
    };
    run(a);
    run(b);
    assert_eq!((built(), evictions()), (2, 0));
    // a again: served by its cached plan, not compiled again.
    run(a);
    assert_eq!((built(), evictions()), (2, 0));
    // c does not fit: b, the least recently used, goes.
    run(c);
    assert_eq!((built(), evictions()), (3, 1));
    let stats = model.plan_cache_stats();
    assert_eq!(stats.plans, 2);
    assert!(stats.bytes <= budget, "{stats:?} over {budget}");
    run(a);
    assert_eq!(built(), 3, "a stayed (it was used after b)");
    run(b);
    assert_eq!(
        (built(), evictions()),
        (4, 2),
        "b was evicted, so it is compiled again"
    );
    assert!(model.plan_cache_stats().bytes <= budget);
}
