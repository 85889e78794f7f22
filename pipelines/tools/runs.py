"""The runs of an output directory: listing with status and headline numbers, and pruning."""
from __future__ import annotations

from pipelines.core import fs
from pipelines.core.locks import LockedError
from pipelines.core.rundir import RunDir, latest_id, list_runs

HEADLINE_METRICS = ("rmse", "accuracy", "hr@10", "ndcg@10", "spearman")


def describe(run: RunDir) -> dict:
    """Status and headline numbers of one run."""
    stages = run.read_manifest().get("stages", {})
    metrics = stages.get("train", {}).get("metrics", {})
    return {"run_id": run.run_id, "status": run.status(),
            "metrics": {k: v for k, v in metrics.items() if k in HEADLINE_METRICS},
            "entities": stages.get("embed", {}).get("entities", {})}


def prune_runs(output: str, keep: int) -> tuple[list[str], list[str]]:
    """Deletes all but the newest `keep` runs (by run id). Never deleted: the run LATEST names and a
    run a live process holds (a backfill or retry in progress), whatever their ids.

    Returns:
        (deleted run ids, run ids kept because they are in use).
    """
    runs = list_runs(output)
    latest = latest_id(output)
    deleted, in_use = [], []
    for run in runs[:max(len(runs) - keep, 0)]:
        if run.run_id == latest:
            continue
        lock = run.lock("embedpipe runs --keep")
        try:
            lock.acquire()  # a live owner keeps its run; a dead owner's lock is taken over
        except LockedError:
            in_use.append(run.run_id)
            continue
        try:
            fs.remove(run.path)  # the lock file goes with it, so nobody starts on it meanwhile
        finally:
            lock.release()
        deleted.append(run.run_id)
    return deleted, in_use
