"""Logs a training run to an MLflow tracking server and registers its model.

Usage: mlflow_log.py TRACKING_URI MODEL.onnx GIT_COMMIT → prints {"run_id": …, "version": …}.
The run has params, metrics (accuracy logged twice: the latest value counts), a numpy
dataset input, the git commit tag MLflow's own autologging sets, and the model as an
artifact under model/; the model version "detector" points at that artifact directory.
Started together with the server (importing mlflow takes as long as the server's start), it
waits up to 3 minutes for the server's /health first.
"""
import json
import sys
import time
import urllib.request

import mlflow
import numpy as np
from mlflow import MlflowClient

uri, model, commit = sys.argv[1:4]
deadline = time.monotonic() + 180
while True:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the MLflow server at {uri} did not answer /health within 3 minutes")
    time.sleep(0.3)
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("edgecd-provenance")
with mlflow.start_run(run_name="train-detector") as run:
    mlflow.log_params({"lr": "0.01", "epochs": "3"})
    mlflow.log_metric("accuracy", 0.5, step=0)
    mlflow.log_metric("accuracy", 0.875, step=1)
    mlflow.log_metric("loss", 0.25)
    ds = mlflow.data.from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4), source="s3://bucket/train.npy", name="train-set")
    mlflow.log_input(ds, context="training")
    mlflow.set_tag("mlflow.source.git.commit", commit)
    mlflow.log_artifact(model, artifact_path="model")
    run_id = run.info.run_id
    artifact_uri = run.info.artifact_uri
client = MlflowClient()
client.create_registered_model("detector")
mv = client.create_model_version("detector", f"{artifact_uri}/model", run_id=run_id)
print(json.dumps({"run_id": run_id, "version": mv.version, "dataset_digest": ds.digest}))
