//! edgecd's reference inference runtime: serves the active model of an installed bundle over
//! HTTP with tract, runs its self-test, exports Prometheus metrics and throttles itself when the
//! SoC gets hot.
//!
//! Modules: `backend` (the seam the service sits on: `Backend` loads a model, `BackendModel`
//! describes and runs it; `TractBackend` is today's runtime), `model` (loading and running
//! ONNX/TFLite with tract; the bundle's active model), `plan_cache` (per-shape plans bounded by
//! their estimated bytes, least recently used evicted),
//! `fuse` (graph rewrites before tract optimizes: hard-swish), `qdq` (keeps tract from
//! folding a quantize/dequantize-wrapped Softmax into a wrong lookup table), `ops` (edgecd's depthwise
//! convolution and max-pool operators for tract, and the rewrite that uses them), `conv`
//! (edgecd's dense convolution by the `gemm` crate, with what follows it folded in), `direct`
//! (the dense convolution computed straight from the padded input, for windows over few
//! positions' waste: the intrinsics kernels and their packed weights), `winograd` (3×3
//! stride-1 convolutions by F(2×2, 3×3) on `direct`'s kernels), `crew` (the threads of one
//! inference, kept spinning between its parallel loops), `spatial`
//! (the pure per-plane loops: windows and im2col),
//! `server` (axum API and hot reload), `selftest` (running and recording self-test vectors),
//! `metrics` (hand-written Prometheus text format), `governor` (pure thermal state machine),
//! `thermal` (sensor IO driving the governor), `npy` (NumPy `.npy` bodies), `raw` (raw tensor bodies with shape/dtype headers), `bench` (in-process
//! latency benchmark and per-operator profile), `error`.

pub mod backend;
pub mod bench;
pub mod conv;
pub mod crew;
pub mod direct;
pub mod error;
pub mod fuse;
pub mod governor;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod ops;
pub mod plan_cache;
pub mod qdq;
pub mod raw;
pub mod selftest;
pub mod server;
pub mod spatial;
pub mod thermal;
pub mod winograd;

pub use backend::{Backend, BackendModel, TractBackend};
pub use error::InferError;
pub use governor::{Governor, GovernorConfig, GovernorState};
pub use model::{Engine, Model};
pub use selftest::{SelfTestReport, record_selftest, run_selftest};
pub use server::{RunningServer, ServeConfig, serve, start};
