"""Word embeddings: embedpipe's skip-gram beside gensim Word2Vec, same settings, same run.

Both: skip-gram, dim 100, window 5, 5 negatives, 5 epochs, min count 5, subsampling 1e-3, on
gensim's `head500.noblanks.cor` (331k words of stemmed Wikipedia); gensim with 2 worker threads.
Throughput is in-vocabulary training words x epochs / training seconds; quality is the Spearman
correlation on WordSim-353 and SimLex-999 over the pairs both words of which have vectors.
gensim's time is its best of 3 trainings, ours one training including Keras' graph tracing and
the per-epoch validation pass.

    python benchmarks/words.py [--out benchmarks/out/words]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SETS = ("wordsim353.tsv", "simlex999.txt")


def gensim_row(lines: list[str], repeats: int = 3) -> dict:
    """gensim's fastest of `repeats` trainings (the machine is shared and noisy; this favours gensim)."""
    from gensim.models import Word2Vec
    from gensim.test.utils import datapath
    sentences = [line.split() for line in lines]
    seconds = float("inf")
    for _ in range(repeats):
        model = Word2Vec(vector_size=100, window=5, negative=5, min_count=5, sample=1e-3, sg=1, workers=2, seed=1)
        model.build_vocab(sentences)
        started = time.perf_counter()
        model.train(sentences, total_examples=len(sentences), epochs=5)
        seconds = min(seconds, time.perf_counter() - started)
    words = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)
    row = {"seconds": seconds, "words_per_second": words * 5 / seconds, "vocabulary": len(model.wv)}
    for name in SETS:
        _, spearman, oov = model.wv.evaluate_word_pairs(datapath(name))
        row[name] = (float(spearman.statistic), oov / 100)
    return row


def embedpipe_row(data: pathlib.Path, out: pathlib.Path) -> dict:
    import yaml
    from gensim.test.utils import datapath
    from pipelines import cli
    from pipelines.tools.neighbors import load_entity
    from pipelines.core.rundir import RunDir
    from pipelines.tools.word_eval import read_word_pairs, word_similarity
    config = yaml.safe_load((ROOT / "examples" / "words.yaml").read_text())
    config["input"]["path"] = str(data)
    path = out / "words.yaml"
    path.write_text(yaml.safe_dump(config))
    run_id = time.strftime("%Y%m%dT%H%M%S")
    assert cli.main(["run", str(path), "--output", str(out / "runs"), "--run-id", run_id]) == 0
    run = RunDir(str(out / "runs" / run_id))
    metrics = json.loads(open(run.join("metrics.json")).read())
    entity = load_entity(run, "word")
    row = {"seconds": metrics["fit_seconds"], "words_per_second": metrics["words_per_second"],
           "vocabulary": metrics["vocabulary"]}
    for name in SETS:
        result = word_similarity(entity, read_word_pairs(datapath(name)))
        row[name] = (result["spearman"], result["oov_share"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out" / "words")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipelines.tools.datasets import words
    args.out.mkdir(parents=True, exist_ok=True)
    lines = list(words().text)
    data = args.out / "words.txt"
    data.write_text("\n".join(lines) + "\n")
    rows = {"gensim Word2Vec (2 workers)": gensim_row(lines), "embedpipe skip-gram": embedpipe_row(data, args.out)}
    print("\nSkip-gram on head500.noblanks.cor (dim 100, window 5, 5 negatives, 5 epochs, min count 5)")
    print("| model | vocabulary | train seconds | words/s | WordSim-353 Spearman (OOV) | SimLex-999 Spearman (OOV) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        cells = [f"{row[s][0]:.3f} ({row[s][1]:.0%})" for s in SETS]
        print(f"| {name} | {row['vocabulary']} | {row['seconds']:.1f} | {row['words_per_second']:,.0f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
