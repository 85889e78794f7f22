"""The run directory: its layout, its manifest, the stage protocol and LATEST.

This module owns every path of a run; nothing else builds them. The protocol (README "Runs"):

- A process works on a run only while it holds `<run>/.lock` (pid, host, heartbeat).
- `manifest.json` is the truth about a run: a stage's outputs count only once the manifest says
  it `succeeded`. A stage marks itself `running`, forgets the later stages (their records, then
  their outputs), writes into `.staging/<stage>/`, then publishes: each old output is renamed
  aside into `.retired/`, the new one renamed in, the old one deleted; then it records success.
- Republishing `embeddings/` deletes what tools derived from them (index/, clusters/, projector/,
  compare/, report.html).
- `<output>/LATEST` names the complete run with the greatest run id. A run that becomes complete
  moves it forward (never back); before a stage changes the outputs of the run LATEST names,
  LATEST moves to the newest other complete run (or is removed), and comes back when the run is
  complete again. LATEST is only written under `<output>/.LATEST.lock`.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import platform
import re
import secrets
import time
from importlib import metadata
from typing import Any, Iterator

from pipelines.core import fs
from pipelines.core.errors import UsageError
from pipelines.core.locks import FileLock, LockOwner, read_owner

MANIFEST = "manifest.json"
LATEST = "LATEST"
LOCK = ".lock"
STAGES = ("preprocess", "train", "embed")
STAGE_OUTPUTS = {"preprocess": ("transform", "data", "invalid"), "train": ("model", "metrics.json"),
                 "embed": ("embeddings",)}
DERIVED_OUTPUTS = ("index", "clusters", "projector", "compare", "report.html")
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_PACKAGES = ("embedpipe", "tensorflow", "tf-keras", "tensorflow-transform", "tfx-bsl", "apache-beam", "pyarrow")


def new_run_id() -> str:
    """A UTC timestamp and a random suffix: sorts by start time, unique within a second
    (20261121T130501Z-3fa90c21). 32 random bits: 50 ids started in one second share one with a
    chance of 3 in 10 million (16 bits made it 2 in 100, which a test met)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def check_run_id(run_id: str) -> str:
    """Raises UsageError unless `run_id` is one safe path component."""
    if not RUN_ID_PATTERN.match(run_id) or run_id == LATEST or ".." in run_id:
        raise UsageError(f"--run-id {run_id!r}: a run id is one name of letters, digits, '.', '_' and '-' "
                         "(not a path), at most 128 characters")
    return run_id


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class RunDir:
    """Paths and bookkeeping of `<output>/<run_id>/`."""

    def __init__(self, path: str):
        self.path = path.rstrip("/")

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    @property
    def run_id(self) -> str:
        return fs.basename(self.path)

    @property
    def output(self) -> str:
        return fs.dirname(self.path)

    def join(self, *parts: str) -> str:
        return fs.join(self.path, *parts)

    # ------------------------------------------------------------------ layout

    @property
    def transform_dir(self) -> str:
        return self.join("transform")

    @property
    def raw_metadata_dir(self) -> str:
        return self.join("transform", "metadata")

    def examples_pattern(self, split: str) -> str:
        return self.join("data", f"{split}-*.tfrecord.gz")

    @property
    def statistics_path(self) -> str:
        """Per-feature statistics of the train split (written by preprocess, read by the report)."""
        return self.join("data", "statistics.json")

    def entity_table_dir(self, entity: str) -> str:
        return self.join("data", "entities", entity)

    @property
    def invalid_dir(self) -> str:
        return self.join("invalid")

    @property
    def export_dir(self) -> str:
        return self.join("model", "export")

    @property
    def metrics_path(self) -> str:
        return self.join("metrics.json")

    def embeddings_dir(self, entity: str) -> str:
        return self.join("embeddings", entity)

    def index_dir(self, entity: str) -> str:
        return self.join("index", entity)

    def clusters_dir(self, entity: str) -> str:
        return self.join("clusters", entity)

    def projector_dir(self, entity: str) -> str:
        return self.join("projector", entity)

    def compare_path(self, entity: str, other_run_id: str) -> str:
        return self.join("compare", f"{entity}-vs-{other_run_id}.json")

    def log_path(self, stage: str) -> str:
        return self.join("logs", f"{stage}.log")

    @property
    def report_path(self) -> str:
        return self.join("report.html")

    def staging(self, stage: str) -> str:
        return self.join(".staging", stage)

    @property
    def lock_path(self) -> str:
        return self.join(LOCK)

    # ------------------------------------------------------------------ manifest

    def exists(self) -> bool:
        return fs.exists(self.join(MANIFEST))

    def read_manifest(self) -> dict[str, Any]:
        """Raises:
            UsageError: there is no manifest (not a run directory).
        """
        try:
            return json.loads(fs.read_text(self.join(MANIFEST)))
        except (FileNotFoundError, NotADirectoryError):
            raise UsageError(f"{self.path} is not an embedpipe run directory (no {MANIFEST}); give a run "
                             "directory, <output>/LATEST or <output>") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        fs.write_text_atomic(self.join(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True, default=str))

    def create(self, config_name: str, raw_config: dict[str, Any]) -> dict[str, Any]:
        """Starts a new manifest for this run (its outputs, if any, are removed first)."""
        if self.exists():
            withdraw_latest(self)
        outputs = [n for names in STAGE_OUTPUTS.values() for n in names] + list(DERIVED_OUTPUTS)
        for name in outputs + ["logs", ".staging", ".retired"]:
            fs.remove(self.join(name))
        manifest = {"run_id": self.run_id, "name": config_name, "created_at": utc_now(),
                    "config": raw_config, "versions": package_versions(), "stages": {}}
        fs.makedirs(self.path)
        self.write_manifest(manifest)
        return manifest

    def stage_record(self, stage: str) -> dict[str, Any]:
        return self.read_manifest().get("stages", {}).get(stage, {})

    def stage_done(self, stage: str) -> bool:
        return self.stage_record(stage).get("status") == "succeeded"

    def is_complete(self) -> bool:
        stages = self.read_manifest().get("stages", {})
        return all(stages.get(stage, {}).get("status") == "succeeded" for stage in STAGES)

    def require_stage(self, stage: str, command: str) -> None:
        """Raises UsageError unless `stage` succeeded, naming the command that makes it."""
        record = self.stage_record(stage)
        if record.get("status") != "succeeded":
            state = record.get("status", "not run")
            raise UsageError(f"{self.path}: {stage} has {'status ' + state if record else 'not run'}; "
                             f"run `embedpipe {command}` first")

    def published_entities(self) -> list[str]:
        if not self.stage_done("embed"):
            return []
        return sorted(self.stage_record("embed").get("entities", {}))

    def owner(self) -> LockOwner | None:
        return read_owner(self.lock_path)

    def status(self) -> str:
        """`complete`, `<stage>: running (pid ...)`, `<stage>: interrupted`, `<stage>: failed` or
        `<stage>: not run` for the first stage that did not succeed."""
        stages = self.read_manifest().get("stages", {})
        for stage in STAGES:
            state = stages.get(stage, {}).get("status", "not run")
            if state == "succeeded":
                continue
            if state == "running":
                owner = self.owner()
                alive = owner is not None and owner.is_alive()
                state = f"running (pid {owner.pid} on {owner.host})" if alive else "interrupted"
            return f"{stage}: {state}"
        return "complete"

    def lock(self, command: str) -> FileLock:
        """The run's lock (not yet taken); the run directory is created when it is taken."""
        return FileLock(self.lock_path, f"run {self.path}", command)

    # ------------------------------------------------------------------ stages

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
        """Runs one stage under the protocol in the module docstring; the body fills the yielded
        dict with facts (counts, metrics, the runner) recorded with the stage's status.

        An interrupted body (Ctrl-C) is recorded as `interrupted`, any other error as `failed`.
        """
        started = time.time()
        withdraw_latest(self)
        self._clear_retired()
        manifest = self.read_manifest()
        stages = manifest.setdefault("stages", {})
        later = STAGES[STAGES.index(stage) + 1:]
        for name in later:
            stages.pop(name, None)
        self.write_manifest(manifest)
        for name in later:
            for output in STAGE_OUTPUTS[name]:
                fs.remove(self.join(output))
        if "embed" in later:
            self.remove_derived()
        self.record_stage(stage, "running", started)
        info: dict[str, Any] = {}
        try:
            yield info
        except BaseException as error:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            self.record_stage(stage, status, started, error=f"{type(error).__name__}: {error}", **info)
            raise
        self.publish(stage, STAGE_OUTPUTS[stage])
        if stage == "embed":
            self.remove_derived()
        self.record_stage(stage, "succeeded", started, **info)

    def clear_staging(self, stage: str) -> str:
        """Empties and returns this stage's staging directory."""
        staging = self.staging(stage)
        fs.remove(staging)
        fs.makedirs(staging)
        return staging

    def publish(self, stage: str, names: tuple[str, ...] | list[str]) -> None:
        """Moves `<staging>/<name>` to `<run>/<name>` for each name: the old output is renamed aside,
        the new one renamed in, then the old one deleted; then the staging directory is removed."""
        staging = self.staging(stage)
        for name in names:
            target, staged = self.join(name), fs.join(staging, name)
            if not fs.exists(staged):
                continue
            retired = None
            if fs.exists(target):
                retired = self.join(".retired", f"{name}-{secrets.token_hex(4)}")
                fs.makedirs(fs.dirname(retired))
                fs.rename(target, retired)
            fs.makedirs(fs.dirname(target))
            fs.rename(staged, target)
            if retired is not None:
                fs.remove(retired)
        fs.remove(staging)
        if not fs.listdir(self.join(".staging")):
            fs.remove(self.join(".staging"))
        self._clear_retired()

    def _clear_retired(self) -> None:
        fs.remove(self.join(".retired"))

    def remove_derived(self) -> None:
        """Deletes what tools derived from the published embeddings (index, clusters, ...)."""
        for name in DERIVED_OUTPUTS:
            fs.remove(self.join(name))


# ---------------------------------------------------------------------------- runs of an output


def list_runs(output: str) -> list[RunDir]:
    """Run directories under `output`, ordered by run id."""
    return [RunDir(fs.dirname(path)) for path in fs.glob(fs.join(output, "*", MANIFEST))]


def latest_id(output: str) -> str | None:
    """The run id LATEST names, or None."""
    try:
        return fs.read_text(fs.join(output, LATEST)).strip() or None
    except (FileNotFoundError, OSError):
        return None


def _latest_lock(output: str) -> FileLock:
    return FileLock(fs.join(output, ".LATEST.lock"), f"{output}/LATEST", "LATEST", heartbeat=False)


def _complete(run: RunDir) -> bool:
    try:
        return run.exists() and run.is_complete()
    except (UsageError, ValueError, OSError):
        return False


def publish_latest(run: RunDir) -> bool:
    """Points LATEST at `run` when it is complete and its id is not older than the run LATEST names
    (or LATEST names no complete run). Returns whether LATEST now names `run`."""
    if not _complete(run):
        return False
    with _latest_lock(run.output):
        current = latest_id(run.output)
        if current is not None and current != run.run_id and current > run.run_id \
                and _complete(RunDir(fs.join(run.output, current))):
            return False
        fs.write_text_atomic(fs.join(run.output, LATEST), run.run_id + "\n")
        return True


def withdraw_latest(run: RunDir) -> str | None:
    """Before `run`'s outputs change: if LATEST names it, LATEST moves to the newest other complete
    run, or is removed when there is none. Returns the run id LATEST names afterwards."""
    if latest_id(run.output) != run.run_id:
        return latest_id(run.output)
    with _latest_lock(run.output):
        others = [r for r in list_runs(run.output) if r.run_id != run.run_id and _complete(r)]
        path = fs.join(run.output, LATEST)
        if others:
            fs.write_text_atomic(path, others[-1].run_id + "\n")
            return others[-1].run_id
        fs.remove(path)
        return None


def resolve_run(path: str) -> RunDir:
    """A run directory, or `<output>/LATEST` / `<output>` resolved to the run LATEST names.

    Raises:
        UsageError: nothing there is a run directory.
    """
    path = path.rstrip("/")
    if fs.basename(path) == LATEST:
        path = fs.dirname(path)
    if not fs.exists(fs.join(path, MANIFEST)):
        latest = latest_id(path)
        if latest is not None:
            path = fs.join(path, latest)
        elif not fs.exists(path):
            raise UsageError(f"{path}: no such run directory")
        else:
            runs = list_runs(path)
            if runs:   # an output root whose runs have not finished: LATEST names none yet
                shown = "; ".join(f"{run.path} ({run.status()})" for run in runs[-3:])
                raise UsageError(f"{path}: no complete run yet (no LATEST); its newest runs: {shown}")
    run = RunDir(path)
    run.read_manifest()  # raises when it is not a run
    return run
