"""The run-directory protocol under schedules and concurrency: one process per run, LATEST always
names a complete run and only moves forward, pruning spares runs in use, every publish step can be
killed. Each test reproduces a way the protocol used to break (issue #15)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipelines.core.locks import FileLock
from pipelines.core.rundir import STAGE_OUTPUTS, STAGES, RunDir, latest_id, new_run_id
from pipelines.tools.runs import prune_runs
from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config

SMALL_ROWS = 300


def small_config(directory: pathlib.Path, epochs: int = 1) -> pathlib.Path:
    data = directory / "small.csv"
    if not data.exists():
        data.write_text("\n".join(TAXI_SAMPLE.read_text().splitlines()[:SMALL_ROWS + 1]) + "\n")
    return write_config(directory, "chicago_taxi_fare", input={"path": str(data)},
                        model={"epochs": epochs, "early_stopping_patience": 0, "batch_size": 64})


def check_invariant(output: pathlib.Path) -> str | None:
    """LATEST names a complete run whose published files all belong to it; returns the id it names."""
    if not (output / "LATEST").exists():
        return None
    run_id = (output / "LATEST").read_text()
    assert run_id.endswith("\n") and run_id.strip() and "\n" not in run_id.strip(), repr(run_id)
    run = output / run_id.strip()
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(manifest["stages"][s]["status"] == "succeeded" for s in STAGES), manifest["stages"]
    for stage in STAGES:
        for name in STAGE_OUTPUTS[stage]:
            assert (run / name).exists(), f"LATEST's run lacks {name}"
    assert not (run / ".retired").exists() and not (run / ".staging").exists()
    for entity, count in manifest["stages"]["embed"]["entities"].items():
        files = sorted((run / "embeddings" / entity).glob("*.parquet"))
        assert files and sum(pq.ParquetFile(f).metadata.num_rows for f in files) == count
        assert all(pq.read_schema(f).metadata[b"run_id"].decode() == run_id.strip() for f in files)
    return run_id.strip()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> pathlib.Path:
    """An output with two complete runs, r1 and r2 (LATEST), of a small taxi sample."""
    directory = tmp_path_factory.mktemp("two")
    config = small_config(directory)
    for run_id in ("r1", "r2"):
        assert run_cli("run", config, "--output", directory / "runs", "--run-id", run_id) == 0
    assert check_invariant(directory / "runs") == "r2"
    return directory


def copy_of(two_runs: pathlib.Path, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A copy of the two runs' output, and the config they were made from."""
    shutil.copytree(two_runs / "runs", tmp_path / "runs")
    return two_runs / "chicago_taxi_fare.yaml", tmp_path / "runs"


# A program that runs the CLI and SIGKILLs itself at the n-th publishing rename, before or after it:
# the real code path, cut at a chosen step (nothing of the system is replaced).
KILLER = """
import os, signal, sys
from pipelines.core import fs
from pipelines.core.rundir import STAGE_OUTPUTS
published = {name for names in STAGE_OUTPUTS.values() for name in names} | {"LATEST"}
nth, when = int(sys.argv[1]), sys.argv[2]
original, seen = fs.rename, [0]
def rename(source, target, overwrite=False):
    publishing = fs.basename(target) in published or "/.retired/" in target
    seen[0] += publishing
    if publishing and seen[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    original(source, target, overwrite)
    if publishing and seen[0] == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    if publishing and nth == 0:
        print("PUBLISH", fs.basename(target), flush=True)   # stdout: stderr goes to the stage logs
fs.rename = rename
from pipelines import cli
sys.exit(cli.main(sys.argv[3:]))
"""


def run_killed_at(nth: int, when: str, *args) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", KILLER, str(nth), when, *map(str, args)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=600)


def publish_steps(*args) -> list[str]:
    """The publishing renames a command makes when nothing stops it (run with n = 0)."""
    result = run_killed_at(0, "never", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("PUBLISH")]


def test_kill_at_every_publish_step_of_a_republished_latest_run(two_runs, tmp_path):
    """`embed` over the run LATEST names: LATEST moves to r1 first, the old embeddings are renamed
    aside, the new ones in, LATEST comes back. A kill at any step leaves LATEST on a complete run."""
    config, output = copy_of(two_runs, tmp_path / "probe")
    steps = publish_steps("embed", output / "r2")
    assert steps[0] == "LATEST" and steps[1].startswith("embeddings-") and steps[2:] == ["embeddings", "LATEST"], steps
    for nth in range(1, len(steps) + 1):
        for when in ("before", "after"):
            case = tmp_path / f"{nth}{when}"
            config, output = copy_of(two_runs, case)
            result = run_killed_at(nth, when, "embed", output / "r2")
            assert result.returncode == -signal.SIGKILL, (nth, when, result.stderr[-2000:])
            assert check_invariant(output) in ("r1", "r2"), (nth, when)
    # the last case resumes: the republished run is complete and LATEST again
    assert run_cli("embed", output / "r2") == 0
    assert check_invariant(output) == "r2"


def test_kill_at_every_publish_step_of_an_overwritten_run(two_runs, tmp_path):
    config, output = copy_of(two_runs, tmp_path / "probe")
    steps = publish_steps("run", config, "--output", output, "--run-id", "r2", "--overwrite")
    assert steps[0] == "LATEST" and steps[-1] == "LATEST" and len(steps) >= 6, steps
    for nth in range(1, len(steps) + 1):
        case = tmp_path / f"{nth}"
        config, output = copy_of(two_runs, case)
        result = run_killed_at(nth, "before", "run", config, "--output", output, "--run-id", "r2", "--overwrite")
        assert result.returncode == -signal.SIGKILL, (nth, result.stderr[-2000:])
        assert check_invariant(output) in ("r1", "r2"), nth
        if nth == len(steps) // 2:   # one in the middle resumes and completes
            assert run_cli("run", config, "--output", output, "--run-id", "r2") == 0
            assert check_invariant(output) == "r2"


def test_latest_only_moves_forward_and_a_finished_run_can_publish_it(two_runs, tmp_path, capsys):
    config, output = copy_of(two_runs, tmp_path)
    assert run_cli("run", config, "--output", output, "--run-id", "r0") == 0   # an older id completes later
    assert latest_id(str(output)) == "r2"
    assert "LATEST still names r2" in capsys.readouterr().err
    # a crash after the last stage and before LATEST: the run given again finishes the job
    (output / "LATEST").write_text("r1\n")
    (output / ".LATEST.tmp-123-abc").write_text("r")
    assert run_cli("run", config, "--output", output, "--run-id", "r2") == 0
    assert check_invariant(output) == "r2" and "LATEST now names it" in capsys.readouterr().err
    assert run_cli("run", config, "--output", output, "--run-id", "r2") == 2     # complete: --overwrite
    assert "pass --overwrite" in capsys.readouterr().err


def test_retraining_the_latest_run_moves_latest_off_it_until_it_is_complete(two_runs, tmp_path):
    _, output = copy_of(two_runs, tmp_path)
    assert run_cli("train", output / "r2") == 0
    assert check_invariant(output) == "r1" and not (output / "r2" / "embeddings").exists()
    assert run_cli("runs", output) == 0
    assert run_cli("embed", output / "LATEST") == 0     # LATEST resolves to r1: re-embedding it is allowed
    assert run_cli("embed", output / "r2") == 0
    assert check_invariant(output) == "r2"


def test_one_process_per_run_and_pruning_spares_runs_in_use(two_runs, tmp_path, capsys):
    config, output = copy_of(two_runs, tmp_path)
    shutil.copytree(output / "r1", output / "r3")       # the newest id; LATEST stays r2
    backfill = RunDir(str(output / "r1"))
    with FileLock(backfill.lock_path, f"run {backfill.path}", "a backfill"):
        assert run_cli("run", config, "--output", output, "--run-id", "r1", "--overwrite") == 2
        assert "in use by pid" in capsys.readouterr().err
        assert prune_runs(str(output), keep=1) == ([], ["r1"])   # r1 in use, r2 LATEST: both kept
    assert prune_runs(str(output), keep=1) == (["r1"], [])
    assert sorted(p.name for p in output.iterdir()) == ["LATEST", "r2", "r3"]
    # a dead owner's lock (kill -9) does not block: the run shows as interrupted, then resumes
    (output / "r4").mkdir()
    stale = {"pid": 2 ** 22 + 12345, "host": os.uname().nodename, "command": "killed", "started_at": 1.0,
             "heartbeat_at": time.time(), "token": "dead"}
    (output / "r4" / ".lock").write_text(json.dumps(stale))
    assert run_cli("run", config, "--output", output, "--run-id", "r4") == 0
    assert not (output / "r4" / ".lock").exists() and check_invariant(output) == "r4"


def test_two_runs_with_the_same_id_at_once(tmp_path):
    config = small_config(tmp_path, epochs=8)
    command = [sys.executable, "-m", "pipelines.cli", "run", str(config), "--output", str(tmp_path / "runs"),
               "--run-id", "same"]
    first = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "runs" / "same" / ".lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    _, first_err = first.communicate(timeout=600)
    assert second.returncode == 2 and "in use by pid" in second.stderr, second.stderr
    assert first.returncode == 0, first_err[-2000:]
    assert check_invariant(tmp_path / "runs") == "same"
    assert not list((tmp_path / "runs" / "same" / "data").glob("beam-temp*"))


def test_run_ids(tmp_path, capsys):
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(i[:8].isdigit() and i[8] == "T" for i in ids)
    config = small_config(tmp_path)
    victim = tmp_path / "victim"
    (victim / "model").mkdir(parents=True)
    for bad in ("/tmp/x", str(victim), "../../y", "a/b", "..", "LATEST", ".hidden", ""):
        assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", bad) == 2, bad
        assert "--run-id" in capsys.readouterr().err
    assert (victim / "model").is_dir() and not (tmp_path / "runs").exists() and not (tmp_path.parent / "y").exists()
