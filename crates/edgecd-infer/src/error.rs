//! The library's error type: every failure of loading, running or checking a model.

use std::path::PathBuf;

/// Errors of the inference runtime. `kind()` maps each to the HTTP status class it gets.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A file of the bundle could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `profile.json` is missing or does not parse.
    #[error("invalid profile {path}: {message}")]
    Profile { path: PathBuf, message: String },
    /// The profile has no model this runtime can run (or not the one asked for).
    #[error("no runnable model: {0}")]
    NoModel(String),
    /// The model uses an operator tract does not implement.
    #[error("model {model} uses unsupported operator {operator}")]
    UnsupportedOperator { model: String, operator: String },
    /// The model file does not parse or cannot be turned into a runnable plan.
    #[error("cannot load model {model}: {message}")]
    Load { model: String, message: String },
    /// The request's tensors do not fit the model (name, dtype, shape, data length).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No input can be generated for the model (self-test recording, readiness check): it has
    /// symbolic dimensions whose sizes cannot be guessed.
    #[error("cannot generate inputs for model {model}: {reason}")]
    NoGeneratedInput { model: String, reason: String },
    /// The model failed while running.
    #[error("model execution failed: {0}")]
    Execution(String),
}

impl InferError {
    /// Is the caller at fault (a 4xx), rather than the model (a 5xx)?
    pub fn is_client_error(&self) -> bool {
        matches!(self, InferError::InvalidInput(_))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InferError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Formats a tract error with its whole context chain on one line.
pub(crate) fn chain(e: &tract_onnx::prelude::TractError) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
