"""Training entry point, as a cloud training job calls it: python -m trainer.task --run-dir RUN [--job-dir DIR]."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from pipelines.core.errors import UsageError
from pipelines.core.quiet import quiet_native_logs
from pipelines.core.rundir import RunDir
from pipelines.core.stage_log import StageLog


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, help="a preprocessed embedpipe run directory")
    parser.add_argument("--job-dir", help="work directory for saved epochs and staging (default: inside the run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_native_logs()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.cluster import cluster_task
    from trainer.train import train_run
    run = RunDir(args.run_dir)
    task = cluster_task()
    try:
        with contextlib.ExitStack() as stack:
            if task.is_chief:  # the chief records and publishes; workers only train their share
                stack.enter_context(run.lock("python -m trainer.task"))
                # A cloud job's own log shows the terminal output; the run keeps the full log too.
                stack.enter_context(StageLog(run, "train", capture_native=False))
            train_run(run, args.job_dir)
    except UsageError as error:
        print(f"trainer.task: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
