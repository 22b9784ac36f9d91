"""Real remote stores for the source tests (issue 18): an S3 API and an MLflow registry, both on this machine.

* S3: moto's server mode on loopback, reached through s3fs with the endpoint and credentials in the standard
  AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), as a real cluster would give them.
* MLflow: a registry with a sqlite backend and a file artifact store, holding the bundled MiniLM twice: version 1
  as a plain directory of its files logged as artifacts, version 2 in MLflow's transformers flavor (``model/``
  and ``components/tokenizer/``, no sentence-transformers modules: mean pooling, not normalized).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Distinctive values, searched for in everything the leak test captures.
KEY_ID = "AKIASPARKINFERTEST01"
SECRET = "sparkinferSecretKey/0123456789abcdef/secretTail"
SESSION_TOKEN = "sparkinferSessionToken0123456789abcdef_sessionTail"
BUCKET = "models"
REGISTERED = "minilm"


@dataclass(frozen=True)
class S3:
    """The S3 API on loopback: `env` holds what a process (driver or Python worker) needs to reach it."""

    env: dict[str, str]
    fs: Any

    def upload(self, local: str, uri: str) -> None:
        """Copy the directory `local` to `uri` (``s3://bucket/prefix``), replacing what was there."""
        path = uri.removeprefix("s3://").rstrip("/")
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        self.fs.put(local.rstrip("/") + "/", path + "/", recursive=True)
        self.fs.invalidate_cache()


@contextmanager
def s3_server() -> Iterator[S3]:
    """Start moto's S3 server on a free loopback port, with the bucket `BUCKET`; its env set in os.environ."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": KEY_ID,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_DEFAULT_REGION": "us-east-1"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield S3(env, fs)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def registry(base: Path, model_dir: str) -> dict[str, str]:
    """A registry under `base` holding `model_dir` as `REGISTERED` versions 1 and 2, alias ``champion`` → 1.

    Returns:
        The environment a process needs to use it (``MLFLOW_TRACKING_URI``); also set in os.environ.
    """
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    os.environ.update(env)
    import mlflow
    import transformers

    client = mlflow.MlflowClient()
    experiment = client.create_experiment("sparkinfer-tests", artifact_location=(base / "artifacts").as_uri())
    client.create_registered_model(REGISTERED)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(model_dir, "model")
    client.create_model_version(REGISTERED, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    flavor = base / "flavor"
    pipeline = {"model": transformers.AutoModel.from_pretrained(model_dir),
                "tokenizer": transformers.AutoTokenizer.from_pretrained(model_dir)}
    mlflow.transformers.save_model(pipeline, str(flavor), task="feature-extraction", pip_requirements=["transformers"])
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(flavor), "model")
    client.create_model_version(REGISTERED, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(REGISTERED, "champion", "1")
    return env


def move_alias(version: str) -> None:
    """Point ``champion`` at `version`."""
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(REGISTERED, "champion", version)
