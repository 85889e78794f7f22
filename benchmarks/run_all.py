"""`make bench`: every benchmark at its default size, tables collected in benchmarks/results.md."""
from __future__ import annotations

import datetime
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ("preprocess.py", "scale.py", "embed.py", "movielens.py", "day_hour.py", "words.py", "item2vec.py", "graph.py")


def main() -> int:
    sections = []
    for script in BENCHMARKS:
        result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script)], cwd=ROOT,
                                capture_output=True, text=True)
        table = [line for line in result.stdout.splitlines() if line.startswith("|") or line.startswith(
            ("Preprocess", "Train and embed", "Embedding", "MovieLens", "Day x hour", "Skip-gram", "Item2vec", "Graph"))]
        print("\n".join(table) if result.returncode == 0 else result.stderr[-3000:], flush=True)
        sections.append(f"## {script}\n\n" + ("\n".join(table) if result.returncode == 0 else
                                             f"failed with exit status {result.returncode}"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (ROOT / "benchmarks" / "results.md").write_text(
        f"# Benchmark results\n\nMeasured by `make bench` on {stamp} (2 cores).\n\n" + "\n\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
