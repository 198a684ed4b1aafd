//! Gathering a bundle's provenance at build time (the I/O side of
//! `edgecd_bundle::provenance`): `mlflow` pulls a registered model or a run's artifact from
//! an MLflow tracking server with its run, params, metrics and datasets; `dvc` reads the
//! `.dvc`/`dvc.lock` files and git commit of DVC-tracked model files.
pub mod dvc;
pub mod mlflow;
