"""The course's picture: does the taxi example's day x hour embedding carry signal?

Runs `examples/chicago_taxi.yaml` (trip duration given distance) once per seed, as a user runs it,
and prints from each run's metrics.json the eval error with the cross beside the same model trained
without it (the example's `ablation`, same run), and the neighbour purity of the weekday daytime
cells beside the share chance gives.

    python benchmarks/day_hour.py [--out benchmarks/out/day_hour] [--seeds 1,2,3,42]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_seed(seed: int, out: pathlib.Path) -> dict:
    """metrics.json of the example trained with `seed`."""
    from pipelines import cli
    config = yaml.safe_load((ROOT / "examples" / "chicago_taxi.yaml").read_text())
    config["input"]["path"] = str(ROOT / config["input"]["path"])
    config["model"]["seed"] = seed
    path = out / f"seed-{seed}.yaml"
    path.write_text(yaml.safe_dump(config))
    if cli.main(["run", str(path), "--output", str(out / "runs"), "--run-id", f"seed-{seed}", "--overwrite"]) != 0:
        raise SystemExit(f"the run of seed {seed} failed (see {out / 'runs' / f'seed-{seed}' / 'logs'})")
    return json.loads((out / "runs" / f"seed-{seed}" / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "day_hour")
    parser.add_argument("--seeds", default="1,2,3,42")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        metrics = run_seed(seed, args.out)
        without, cells = metrics["ablation"]["day_hour"], metrics["neighbour_purity"]["day_hour"]
        rows.append((seed, metrics["rmse"], without["rmse"], metrics["mae"], without["mae"],
                     cells["weekday_daytime@5"], cells["chance"]))
    print("Day x hour: examples/chicago_taxi.yaml, eval error of log(1 + seconds) with the cross and "
          "without it (same run), neighbour purity of weekday daytime cells beside chance")
    print("| seed | RMSE with / without | MAE with / without | purity@5 / chance |")
    print("| --- | --- | --- | --- |")
    for seed, rmse, rmse_without, mae, mae_without, found, chance in rows:
        print(f"| {seed} | {rmse:.4f} / {rmse_without:.4f} | {mae:.4f} / {mae_without:.4f} | {found:.2f} / {chance:.2f} |")
    table = np.array([row[1:] for row in rows])
    mean, std = table.mean(axis=0), table.std(axis=0)
    print(f"| mean +- std | {mean[0]:.4f} +- {std[0]:.4f} / {mean[1]:.4f} +- {std[1]:.4f} | "
          f"{mean[2]:.4f} / {mean[3]:.4f} | {mean[4]:.2f} +- {std[4]:.2f} / {mean[5]:.2f} |")
    better = sum(row[1] < row[2] for row in rows)
    print(f"| the cross lowers RMSE in | {better} of {len(rows)} seeds | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
