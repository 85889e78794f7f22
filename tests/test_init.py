"""`embedpipe init` drafts configs that run end to end unedited (issue #16)."""
from __future__ import annotations

import math

import yaml

from pipelines.tools.draft import feature_for, profile
from tests.conftest import ROOT, TAXI_SAMPLE, run_cli


def drafted(capsys, *args) -> dict:
    capsys.readouterr()
    assert run_cli("init", *args) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Drafted by `embedpipe init`")
    return yaml.safe_load(text), text


def test_column_rules():
    rows = 2000
    cases = {
        "pickup_area": ([str(i % 77 + 1) for i in range(rows)], "identity"),
        "miles": ([f"{i * 0.37:.2f}" for i in range(rows)], "numeric"),
        "trip_seconds": ([str(60 * (i % 90)) for i in range(rows)], "numeric"),
        "census_tract": ([str(17031000000 + 100 * (i % 140)) for i in range(rows)], "vocabulary"),
        "payment": ([["Cash", "Credit Card", "Unknown"][i % 3] for i in range(rows)], "vocabulary"),
        "started_at": ([str(1400000000 + 3600 * i) for i in range(rows)], "cross"),
        "when": ([f"2014-05-{i % 28 + 1:02d} {i % 24:02d}:00" for i in range(rows)], "cross"),
        "genres": (["Drama|Comedy", "War", "Comedy|Drama|Romance"] * (rows // 3) + ["War"] * (rows % 3), "text"),
        "review": ([f"a long sentence about thing {i} and more" for i in range(rows)], "text"),
        "order_id": ([f"o{i}" for i in range(rows)], None),
        "constant": (["x"] * rows, None),
        "sparse": ([""] * (rows - 10) + ["a"] * 10, None),
    }
    for name, (values, kind) in cases.items():
        spec, reason = feature_for(profile(name, values))
        assert (spec or {}).get("type") == kind, (name, spec, reason)
    spec, reason = feature_for(profile("device", [f"d{i}" for i in range(rows)] + [f"d{i}" for i in range(rows // 4)]))
    assert spec["type"] == "hash" and spec["hash_buckets"] >= 4 * rows and "buckets" in reason


def test_drafts_run_end_to_end(tmp_path, capsys, movielens_sample):
    config, text = drafted(capsys, TAXI_SAMPLE, "--label", "fare")
    assert config["model"] == {**config["model"], "kind": "supervised", "label": "fare", "task": "regression"}
    assert config["features"]["trip_start_timestamp_day_hour"]["columns"] == [
        "trip_start_timestamp.day_of_week", "trip_start_timestamp.hour"]
    assert "#   pickup_census_tract: 100% missing" in text and "#   fare: the label" in text
    (tmp_path / "taxi.yaml").write_text(text)
    assert run_cli("run", tmp_path / "taxi.yaml", "--output", tmp_path / "taxi") == 0

    config, text = drafted(capsys, movielens_sample, "--query", "userId", "--candidate", "movieId", "genres")
    assert config["model"]["kind"] == "two_tower" and config["features"]["genres"] == {"type": "text",
                                                                                       "delimiter": "|"}
    assert {"name": "movieId", "key": "movieId", "metadata": ["title"]} in config["entities"]
    (tmp_path / "ml.yaml").write_text(text)
    assert run_cli("run", tmp_path / "ml.yaml", "--output", tmp_path / "ml") == 0

    corpus = tmp_path / "corpus.txt"
    from gensim.test.utils import datapath
    corpus.write_text(open(datapath("lee_background.cor"), encoding="utf-8").read())
    config, text = drafted(capsys, corpus)
    assert config["model"]["kind"] == "skipgram" and config["features"]["text"]["type"] == "text"
    (tmp_path / "words.yaml").write_text(text)
    assert run_cli("run", tmp_path / "words.yaml", "--output", tmp_path / "words") == 0


def test_init_errors(capsys):
    for args, message in ((["--label", "nope"], "--label nope: not a column of"),
                          ([], "say what to learn"),
                          (["--query", "company"], "--query and --candidate go together")):
        assert run_cli("init", TAXI_SAMPLE, *args) == 2
        assert message in capsys.readouterr().err
    assert run_cli("init", ROOT / "no" / "such.csv", "--label", "x") == 2
    assert "no file matches" in capsys.readouterr().err


def test_drafts_for_event_logs_and_graphs_run_end_to_end(tmp_path, capsys, movielens_sample):
    import pandas as pd
    from pipelines.tools.datasets import planted_partition
    from tests.test_graph import purity
    config, text = drafted(capsys, movielens_sample, "--sequences", "userId", "movieId")
    assert config["sequences"] == {"group_by": "userId", "order_by": "timestamp", "item": "movieId"}
    assert config["model"]["kind"] == "skipgram" and list(config["features"]) == ["movieId"]
    assert config["entities"] == [{"name": "movieId", "key": "movieId", "metadata": ["title"]}]
    assert "#   rating: not one of the --sequences columns" in text
    (tmp_path / "sequences.yaml").write_text(text)
    assert run_cli("run", tmp_path / "sequences.yaml", "--output", tmp_path / "sequences", "--run-id", "s") == 0
    movies = pd.read_parquet(tmp_path / "sequences" / "s" / "embeddings" / "movieId")
    assert len(movies) > 100 and movies.title.notna().all()

    edges, communities = planted_partition(nodes=400, communities=8, degree_in=8, degree_out=1, seed=1)
    edges.to_csv(tmp_path / "edges.csv", index=False)
    config, text = drafted(capsys, tmp_path / "edges.csv", "--graph", "source", "target")
    assert config["graph"]["source"] == "source" and config["features"] == {"node": {"type": "vocabulary"}}
    (tmp_path / "graph.yaml").write_text(text)
    assert run_cli("run", tmp_path / "graph.yaml", "--output", tmp_path / "graph", "--run-id", "g") == 0
    nodes = pd.read_parquet(tmp_path / "graph" / "g" / "embeddings" / "node")
    assert set(nodes.key) == set(communities.index) and purity(nodes, communities) > 0.9


def test_init_errors_for_event_logs_and_graphs(tmp_path, capsys, movielens_sample):
    for args, message in ((["--sequences", "userId"], "--sequences GROUP ITEM [ORDER]: two or three columns (got 1)"),
                          (["--sequences", "userId", "movieId", "nope"], "--sequences nope: not a column of"),
                          (["--graph", "userId", "movieId", "rating", "year"], "--graph SOURCE TARGET [WEIGHT]"),
                          (["--label", "rating", "--graph", "userId", "movieId"], "choose one model to draft"),
                          (["--sequences", "userId", "movieId", "title"], "title holds string values such as"),
                          (["--graph", "userId", "movieId", "title"], "weights must be positive numbers (title holds "
                                                                      "string values)")):
        assert run_cli("init", movielens_sample, *args) == 2
        assert message in capsys.readouterr().err
    assert run_cli("init", TAXI_SAMPLE, "--sequences", "company", "pickup_community_area") == 0
    assert "order_by: trip_start_timestamp" in capsys.readouterr().out   # the timestamp column orders them
    (tmp_path / "baskets.csv").write_text("basket,item\n" + "".join(f"b{i % 7},i{i % 11}\n" for i in range(50)))
    assert run_cli("init", tmp_path / "baskets.csv", "--sequences", "basket", "item") == 2
    assert "no timestamp column to order each group's events" in capsys.readouterr().err


def test_document_drafts_size_their_batch_and_allow_for_missing_values(tmp_path, capsys, movielens_sample):
    import pandas as pd
    from pipelines.tools.draft_documents import estimated_rows
    from pipelines.tools.draft import read_data
    rows = len(pd.read_csv(movielens_sample))
    whole = read_data(str(movielens_sample), None, 20000)
    part = read_data(str(movielens_sample), None, 1000)   # 1,000 sampled: the rest estimated from bytes per row
    assert estimated_rows(whole, 20000) == rows and abs(estimated_rows(part, 1000) / rows - 1) < 0.2
    pd.read_csv(movielens_sample).to_parquet(tmp_path / "ratings.parquet")
    assert estimated_rows(read_data(str(tmp_path / "ratings.parquet"), None, 1000), 1000) == rows
    for sample in ("20000", "1000"):   # the same batch whether the file was read whole or sampled
        config, _ = drafted(capsys, movielens_sample, "--sequences", "userId", "movieId", "--sample", sample)
        assert config["model"]["batch_size"] == 2 ** int(math.log2(rows // 20)), sample
    edges = pd.DataFrame({"source": [f"n{i % 50}" for i in range(400)], "target": [f"n{(i * 7) % 50}" for i in range(400)]})
    edges.loc[::10, "target"] = None   # 10% of the edges miss a node: allowed for, twice over
    edges.to_csv(tmp_path / "edges.csv", index=False)
    config, text = drafted(capsys, tmp_path / "edges.csv", "--graph", "source", "target")
    assert config["input"]["max_invalid_fraction"] == 0.2 and "10.0% of the sampled rows miss a value" in text
