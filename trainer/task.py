"""Training entry point, as a cloud training job calls it: python -m trainer.task --run-dir RUN [--job-dir DIR]."""
from __future__ import annotations

import argparse
import logging
import sys

from trainer.train import train_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, help="a preprocessed embedpipe run directory")
    parser.add_argument("--job-dir", help="work directory for checkpoints and staging (default: inside the run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_run(args.run_dir, args.job_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
