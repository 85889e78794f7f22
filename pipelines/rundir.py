"""One run's directory: layout, manifest, staging and atomic publication.

Each stage writes into `<run>/.staging/<stage>/` and, once it has succeeded, renames its outputs
into place and records itself in `manifest.json`. `<output>/LATEST` is written last by `run`.
Paths go through `tf.io.gfile`, so `gs://` outputs work too (there a rename is a copy, so a
reader must trust `manifest.json`, not the presence of a directory).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import time
from importlib import metadata
from typing import Any, Iterable, Iterator

import tensorflow as tf

MANIFEST = "manifest.json"
LATEST = "LATEST"
STAGES = ("preprocess", "train", "embed")
STAGE_OUTPUTS = {"preprocess": ("transform", "data", "invalid"), "train": ("model", "metrics.json"),
                 "embed": ("embeddings",)}
_PACKAGES = ("embedpipe", "tensorflow", "tf-keras", "tensorflow-transform", "tfx-bsl", "apache-beam", "pyarrow")


def new_run_id() -> str:
    """A UTC timestamp, sortable and unique per second: 20261121T130501Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_text_atomic(path: str, text: str) -> None:
    """Writes `path` through a temporary sibling and a rename, so readers never see half a file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)


class RunDir:
    """Paths and bookkeeping of `<output>/<run_id>/`."""

    def __init__(self, path: str):
        self.path = path.rstrip("/")

    @property
    def run_id(self) -> str:
        return os.path.basename(self.path)

    @property
    def output(self) -> str:
        return os.path.dirname(self.path)

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def transform_dir(self) -> str:
        return self.join("transform")

    @property
    def data_dir(self) -> str:
        return self.join("data")

    @property
    def model_dir(self) -> str:
        return self.join("model")

    @property
    def export_dir(self) -> str:
        return self.join("model", "export")

    @property
    def embeddings_dir(self) -> str:
        return self.join("embeddings")

    def staging(self, stage: str) -> str:
        return self.join(".staging", stage)

    # ------------------------------------------------------------------ manifest

    def exists(self) -> bool:
        return tf.io.gfile.exists(self.join(MANIFEST))

    def read_manifest(self) -> dict[str, Any]:
        path = self.join(MANIFEST)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{self.path}: no {MANIFEST}; not an embedpipe run directory")
        with tf.io.gfile.GFile(path) as handle:
            return json.load(handle)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self.join(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True, default=str))

    def create(self, config_name: str, raw_config: dict[str, Any]) -> dict[str, Any]:
        """Starts a new manifest for this run (the directory is created if needed)."""
        tf.io.gfile.makedirs(self.path)
        manifest = {
            "run_id": self.run_id, "name": config_name, "created_at": utc_now(),
            "config": raw_config, "versions": package_versions(), "stages": {},
        }
        self.write_manifest(manifest)
        return manifest

    def stage_done(self, stage: str) -> bool:
        return self.read_manifest().get("stages", {}).get(stage, {}).get("status") == "succeeded"

    def is_complete(self) -> bool:
        return all(self.stage_done(stage) for stage in STAGES)

    def record_stage(self, stage: str, status: str, started: float, **info: Any) -> dict[str, Any]:
        """Records a stage's status, timing and facts (counts, metrics) in the manifest."""
        manifest = self.read_manifest()
        manifest.setdefault("stages", {})[stage] = {
            "status": status,
            "started_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            **info,
        }
        self.write_manifest(manifest)
        return manifest

    @contextlib.contextmanager
    def stage(self, stage: str) -> Iterator[dict[str, Any]]:
        """Runs one stage: marks it running, invalidates the stages after it (their records and
        published outputs, which came from older inputs), and on success publishes the staged
        outputs and records the facts the body put in the yielded dict; on failure records it."""
        started = time.time()
        later = STAGES[STAGES.index(stage) + 1:]
        manifest = self.read_manifest()
        stages = manifest.setdefault("stages", {})
        for name in later:
            stages.pop(name, None)
            for output in STAGE_OUTPUTS[name]:
                self._remove(self.join(output))
        self.write_manifest(manifest)
        self.record_stage(stage, "running", started)
        info: dict[str, Any] = {}
        try:
            yield info
        except BaseException as error:
            self.record_stage(stage, "failed", started, error=f"{type(error).__name__}: {error}", **info)
            raise
        self.publish(stage, STAGE_OUTPUTS[stage])
        self.record_stage(stage, "succeeded", started, **info)

    # ------------------------------------------------------------------ staging

    def clear_staging(self, stage: str) -> str:
        """Empties and returns this stage's staging directory."""
        staging = self.staging(stage)
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        tf.io.gfile.makedirs(staging)
        return staging

    def publish(self, stage: str, names: Iterable[str]) -> None:
        """Moves `<staging>/<name>` to `<run>/<name>` for each name, replacing earlier outputs,
        then removes the stage's staging directory."""
        staging = self.staging(stage)
        for name in names:
            target = self.join(name)
            self._remove(target)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.rename(os.path.join(staging, name), target)
        tf.io.gfile.rmtree(staging)
        if not tf.io.gfile.listdir(self.join(".staging")):
            tf.io.gfile.rmtree(self.join(".staging"))

    @staticmethod
    def _remove(path: str) -> None:
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_latest(output: str, run_id: str) -> None:
    write_text_atomic(os.path.join(output, LATEST), run_id + "\n")


def resolve_run(path: str) -> RunDir:
    """A run directory, or `<output>/LATEST` / `<output>` resolved to the newest complete run."""
    path = path.rstrip("/")
    if os.path.basename(path) == LATEST:
        path = os.path.dirname(path)
    latest = os.path.join(path, LATEST)
    if not tf.io.gfile.exists(os.path.join(path, MANIFEST)) and tf.io.gfile.exists(latest):
        with tf.io.gfile.GFile(latest) as handle:
            path = os.path.join(path, handle.read().strip())
    return RunDir(path)
