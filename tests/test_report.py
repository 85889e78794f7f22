"""The run report: feature statistics from preprocess, the page's numbers against the run's own files,
every section for every model kind, a failed run's page, no external references, and a real browser."""
from __future__ import annotations

import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image

from pipelines.core import fs
from pipelines.core.config_parse import config_from_dict
from pipelines.core.dates import WEEKDAYS
from pipelines.core.rundir import RunDir
from pipelines.stages.preprocess.statistics import SummarizeFeatures
from pipelines.tools.drift import compare_runs
from pipelines.tools.plot import day_hour_grid
from pipelines.tools.report_figures import format_number
from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config
from tests.test_failures import corrupted_csv

SECTIONS = ("summary", "data", "training", "entities", "drift")


class Page(html.parser.HTMLParser):
    """What the tests read from a report: number cells (data-key -> value and shown text), element
    ids, every attribute and tag, inline CSS, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.numbers: dict[str, tuple[object, str]] = {}
        self.ids: set[str] = set()
        self.tags: list[tuple[str, dict]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._open: list[tuple[str, str, list[str]]] = []
        self._in_style = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self.ids.update([attributes["id"]] if "id" in attributes else [])
        self._in_style = tag == "style"
        if "data-key" in attributes:
            self._open.append((tag, attributes["data-key"], []))
            self.numbers[attributes["data-key"]] = (json.loads(attributes["data-value"]), "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if self._open and self._open[-1][0] == tag:
            _, key, parts = self._open.pop()
            self.numbers[key] = (self.numbers[key][0], "".join(parts).strip())

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)
        for _, _, parts in self._open:
            parts.append(data)

    def value(self, key: str) -> object:
        return self.numbers[key][0]


def read_page(path: pathlib.Path | str) -> Page:
    return Page(fs.read_text(str(path)))


def manifest(run: pathlib.Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


# ------------------------------------------------------------------------------ statistics


def test_feature_statistics_equal_hand_computed_numbers():
    raw = {"name": "s", "input": {"path": "x.csv", "format": "csv"}, "output": "o",
           "features": {"miles": {"type": "numeric"},
                        "pay": {"type": "vocabulary", "frequency_threshold": 2},
                        "day_hour": {"type": "cross", "columns": ["day", "hour"], "hash_buckets": 10},
                        "words": {"type": "text", "column": "text", "top_k": 2},
                        "area": {"type": "identity", "num_buckets": 5},
                        "tip": {"type": "numeric", "bucketize": 4}},
           "model": {"kind": "supervised", "label": "fare"}, "entities": [{"name": "pay", "key": "pay"}]}
    config = config_from_dict(raw)
    # Three batches, so partial results are merged; "tip" arrives as strings ("" is missing), as a
    # column read both as a number and as a category is typed.
    batches = [
        {"miles": [1.0, 2.0, float("nan")], "pay": ["a", "b", "a"], "day": ["1", "1", "2"], "hour": ["0", "0", "3"],
         "text": ["The cat", "", "a CAT"], "area": [1, -1, 4], "tip": ["1", "", "3"]},
        {"miles": [4.0], "pay": [""], "day": ["1"], "hour": ["0"], "text": ["cat dog"], "area": [4], "tip": ["5"]},
        {"miles": [8.0, 5.0], "pay": ["b", "c"], "day": ["7", "1"], "hour": ["23", "0"], "text": ["dog", "the"],
         "area": [0, 2], "tip": ["7", ""]},
    ]
    types = {"miles": pa.float32(), "area": pa.int64()}
    records = [pa.RecordBatch.from_pydict({k: pa.array(v, types.get(k, pa.string())) for k, v in b.items()})
               for b in batches]

    def check(documents):
        assert len(documents) == 1 and documents[0]["split"] == "train"
        found = documents[0]["features"]
        assert list(found) == list(raw["features"])
        miles = [1.0, 2.0, 4.0, 8.0, 5.0]
        assert found["miles"]["rows"] == 6 and found["miles"]["missing"] == 1
        assert found["miles"]["missing_share"] == pytest.approx(1 / 6)
        assert found["miles"]["mean"] == pytest.approx(4.0)
        assert found["miles"]["std"] == pytest.approx(np.std(miles))            # population, as tft.var
        assert (found["miles"]["min"], found["miles"]["max"]) == (1.0, 8.0)
        assert found["miles"]["quantiles"][0] == 1.0 and found["miles"]["quantiles"][-1] == 8.0
        assert found["miles"]["quantiles"][10] == 4.0 and len(found["miles"]["quantiles"]) == 21
        assert found["tip"]["mean"] == pytest.approx(4.0) and found["tip"]["missing"] == 2
        assert found["tip"]["buckets"] == 4
        pay = found["pay"]       # a:2 b:2 c:1, "" is missing; threshold 2 keeps a and b
        assert (pay["rows"], pay["missing"], pay["values"], pay["distinct"]) == (6, 1, 5, 3)
        assert pay["vocabulary_size"] == 2
        assert pay["top"] == [{"value": "a", "count": 2}, {"value": "b", "count": 2}, {"value": "c", "count": 1}]
        cross = found["day_hour"]
        assert cross["top"][0] == {"value": "1|0", "count": 4} and cross["distinct"] == 3 and cross["buckets"] == 10
        words = found["words"]   # lower-cased tokens: cat 3, the 2, dog 2, a 1; one row has none; top_k 2
        assert (words["values"], words["missing"], words["distinct"], words["vocabulary_size"]) == (8, 1, 4, 2)
        assert words["top"][0] == {"value": "cat", "count": 3}
        area = found["area"]     # -1 is a missing id
        assert (area["missing"], area["distinct"], area["buckets"]) == (1, 4, 5)
        assert area["top"][0] == {"value": "4", "count": 2}

    with TestPipeline() as pipeline:
        documents = pipeline | beam.Create(records) | SummarizeFeatures(config)
        assert_that(documents, check)


def vocabulary_file(run: pathlib.Path, name: str) -> list[str]:
    return (run / "transform" / "transform_fn" / "assets" / name).read_text().splitlines()


def test_statistics_of_a_run_agree_with_its_manifest_and_vocabularies(taxi_run, movielens_run):
    for run, vocabularies in ((taxi_run, ["payment_type"]), (movielens_run, ["userId", "movieId", "genres"])):
        statistics = json.loads((run / "data" / "statistics.json").read_text())["features"]
        train_rows = manifest(run)["stages"]["preprocess"]["counts"]["rows_train"]
        assert all(f["rows"] == train_rows for f in statistics.values())
        for name in vocabularies:    # counted as tf.Transform counts its vocabulary
            assert statistics[name]["vocabulary_size"] == len(vocabulary_file(run, name)), name


# ------------------------------------------------------------------------------ runs of every kind


@pytest.fixture(scope="module")
def words_run(tmp_path_factory) -> pathlib.Path:
    """A small skip-gram run."""
    directory = tmp_path_factory.mktemp("words")
    rng = np.random.default_rng(0)
    lines = [f"the {rng.choice(['cat', 'dog', 'horse'])} {rng.choice(['ate', 'saw'])} the "
             f"{rng.choice(['car', 'bus', 'truck'])}" for _ in range(600)]
    (directory / "corpus.txt").write_text("\n".join(lines) + "\n")
    config = write_config(directory, "words", input={"path": str(directory / "corpus.txt")},
                          model={"embedding_dim": 8, "window": 2, "epochs": 2, "batch_size": 256, "subsample": 1.0})
    assert run_cli("run", config, "--output", directory / "runs", "--run-id", "w") == 0
    return directory / "runs" / "w"


@pytest.fixture(params=["taxi_run", "movielens_run", "words_run"])
def any_run(request) -> pathlib.Path:
    return request.getfixturevalue(request.param)


def test_every_section_for_every_model_kind(any_run):
    page = read_page(any_run / "report.html")
    assert set(SECTIONS) <= page.ids
    config = manifest(any_run)["config"]
    svgs = sum(1 for tag, _ in page.tags if tag == "svg")
    assert svgs >= 1 + 2 * len(config["entities"])       # loss history; counts and map per entity
    for entity in config["entities"]:
        assert f"entity-{entity['name']}" in page.ids
        assert page.value(f"entity:{entity['name']}:keys") == manifest(any_run)["stages"]["embed"]["entities"][entity["name"]]
    text = " ".join(page.text)
    assert "Nearest neighbours of the" in text and "no earlier run to compare with" in text
    assert "complete" in text


def test_page_numbers_equal_the_manifest_and_metrics(any_run):
    page = read_page(any_run / "report.html")
    record = manifest(any_run)["stages"]
    metrics = json.loads((any_run / "metrics.json").read_text())
    statistics = json.loads((any_run / "data" / "statistics.json").read_text())["features"]
    for name in ("rows_read", "rows_valid", "rows_invalid", "rows_train", "rows_eval"):
        assert page.numbers[f"count:{name}"] == (record["preprocess"]["counts"][name],
                                                 format_number(record["preprocess"]["counts"][name]))
    for stage in ("preprocess", "train", "embed"):
        assert page.value(f"stage:{stage}:seconds") == record[stage]["seconds"]
    shown = {k[len("metric:"):]: v for k, (v, _) in page.numbers.items() if k.startswith("metric:")}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in
               ("epochs_run", "best_epoch", "fit_seconds", "workers")}
    assert shown == scalars
    for name in ("epochs_run", "best_epoch", "fit_seconds", "workers"):
        assert page.value(f"train:{name}") == metrics.get(name)
    for name, share in metrics.get("eval_oov_share", {}).items():
        assert page.value(f"oov:{name}") == share
    for name, stats in statistics.items():
        for field in ("mean", "std", "missing_share", "vocabulary_size", "buckets", "distinct"):
            if field in stats:
                assert page.value(f"stat:{name}:{field}") == stats[field], (name, field)


def test_taxi_page_shows_the_day_hour_grid_and_baselines(taxi_run):
    text = (taxi_run / "report.html").read_text()
    page = read_page(taxi_run / "report.html")
    assert "Day of week x hour of day" in text and "1st principal component" in text
    assert page.value("metric:baseline_mean_rmse") > page.value("metric:rmse")
    assert "baseline: linear" in " ".join(page.text)


def test_day_hour_grid_places_each_key_at_its_day_and_hour():
    rng = np.random.default_rng(1)
    keys = [f"{day}|{hour}" for day in range(1, 8) for hour in range(24) if (day, hour) != (3, 5)]
    vectors = rng.normal(size=(len(keys), 4)).astype(np.float32)
    grid, days = day_hour_grid(keys, vectors)
    assert grid.shape == (7, 24) and np.isnan(grid[2, 5]) and np.sum(np.isnan(grid)) == 1
    assert days == [str(day) for day in range(1, 8)]
    centered = vectors - vectors.mean(axis=0)
    first = centered @ np.linalg.svd(centered, full_matrices=False)[2][0]
    np.testing.assert_allclose(np.abs(grid[6, 23]), np.abs(first[keys.index("7|23")]), rtol=1e-4)
    swapped = [f"{key.split('|')[1]}|{key.split('|')[0]}" for key in keys]   # hour|day
    np.testing.assert_allclose(day_hour_grid(swapped, vectors)[0], grid, equal_nan=True)
    named = [f"{WEEKDAYS[int(key.split('|')[0]) - 1]}|{key.split('|')[1]}" for key in keys]
    assert day_hour_grid(named, vectors)[1] == list(WEEKDAYS)
    assert day_hour_grid(["a|b", "c|d"], vectors[:2]) is None
    # The same vectors read in another order (Parquet files do not keep one) draw the same grid.
    for seed in range(4):    # SVD alone flips the component's sign for seeds 1 and 3
        order = np.random.default_rng(seed).permutation(len(keys))
        np.testing.assert_allclose(day_hour_grid([keys[i] for i in order], vectors[order])[0], grid, rtol=1e-5,
                                   atol=1e-6, equal_nan=True)


# ------------------------------------------------------------------------------ self-contained

URL_ATTRIBUTES = ("src", "href", "xlink:href", "srcset", "action", "data", "poster", "background")


def external_references(page: Page) -> list[str]:
    found = []
    for tag, attributes in page.tags:
        for name in URL_ATTRIBUTES:
            value = (attributes.get(name) or "").strip()
            if value and not value.startswith(("#", "data:")):
                found.append(f"<{tag} {name}={value[:60]}>")
        if tag == "script" or (tag == "link" and "stylesheet" in (attributes.get("rel") or "")):
            found.append(f"<{tag}>")
    css = " ".join(page.styles) + " ".join(a.get("style", "") for _, a in page.tags)
    found += re.findall(r"@import[^;]*|url\(\s*['\"]?(?:https?:)?//[^)]*\)", css)
    return found


def test_the_page_references_nothing_outside_itself(any_run):
    page = read_page(any_run / "report.html")
    assert external_references(page) == []
    assert external_references(Page('<img src="https://x.org/a.png"><script src="a.js"></script>'
                                     '<style>@import "b.css"; p {background: url(http://x.org/c)}</style>')) == [
        "<img src=https://x.org/a.png>", "<script src=a.js>", "<script>", '@import "b.css"', "url(http://x.org/c)"]


def test_report_size_stays_small(any_run):
    assert (any_run / "report.html").stat().st_size < 2_000_000


# ------------------------------------------------------------------------------ a failed run


def test_a_failed_run_gets_a_page_naming_the_failed_stage(tmp_path):
    corrupted_csv(tmp_path / "dirty.csv")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "dirty.csv")})
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(config), "--output",
                             str(tmp_path / "runs"), "--run-id", "x"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 1, result.stderr[-2000:]
    run = tmp_path / "runs" / "x"
    lines = result.stderr.strip().splitlines()
    # The terminal stays clean: the run's own lines, the report's path, the failure line; no library chatter.
    assert all(re.match(r"(run {8}|preprocess |report {5})\S|embedpipe: preprocess failed: ", line) for line in lines), lines
    assert f"report     {run / 'report.html'}" in lines
    page = read_page(run / "report.html")
    failure = " ".join(page.text)
    assert "preprocess failed" in failure and "InvalidInputError" in failure and str(run / "logs" / "preprocess.log") in failure
    reasons = manifest(run)["stages"]["preprocess"]["invalid_reasons"]
    assert reasons and {k[len("invalid:"):]: v for k, (v, _) in page.numbers.items() if k.startswith("invalid:")} == reasons
    assert "label 'fare' is NaN" in failure       # an example row's reason
    assert "No training results: train not run." in failure and "Not published: embed not run." in failure
    assert set(SECTIONS) <= page.ids


# ------------------------------------------------------------------------------ the command, remotely


def test_report_command_on_a_remote_run_with_drift(taxi_run, capsys):
    output = f"ram://report-{uuid.uuid4().hex}"
    old, new = fs.join(output, "old"), fs.join(output, "new")
    fs.copy_tree(str(taxi_run), old)
    fs.copy_tree(str(taxi_run), new)
    page_path = fs.join(output, "pages", "page.html")
    assert run_cli("report", new, "--against", old, "-o", page_path) == 0
    assert capsys.readouterr().out.strip() == page_path
    page = read_page(page_path)
    assert "Against run old" in " ".join(page.text).replace("  ", " ")
    for entity in ("day_hour", "payment", "company", "pickup_area"):
        report = compare_runs(RunDir(old), RunDir(new), entity)     # what `compare` prints and writes
        for field in ("shared_keys", "added_keys", "removed_keys", "mean_cosine_aligned", "neighbor_overlap@10"):
            if field in report:
                assert page.value(f"drift:{entity}:{field}") == report[field], (entity, field)
        moved = [k for k in page.numbers if k.startswith(f"moved:{entity}:")]
        assert len(moved) == min(20, report["shared_keys"])
    assert run_cli("report", new) == 0 and fs.exists(fs.join(new, "report.html"))
    capsys.readouterr()
    assert run_cli("report", new, "--against", fs.join(output, "missing")) == 2
    assert run_cli("report", fs.join(output, "missing")) == 2
    assert run_cli("report", new, "--against", new) == 2
    assert "--against" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a real browser

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0")


def render(page: pathlib.Path, directory: pathlib.Path) -> tuple[subprocess.CompletedProcess, pathlib.Path]:
    """Loads `page` from its file URL in headless Chromium; returns the process and a screenshot."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    screenshot = directory / f"{page.stem}.png"
    result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={directory / 'profile'}",
                             f"--screenshot={screenshot}", "--window-size=1280,4000", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    return result, screenshot


def console_messages(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def test_chromium_renders_the_page_without_console_messages(any_run, tmp_path):
    result, screenshot = render(any_run / "report.html", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result) == []       # no errors, and nothing the page's policy had to block
    with Image.open(screenshot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is blank"


def test_chromium_check_sees_blocked_loads_and_errors(tmp_path):
    text = (ROOT / "pipelines" / "tools" / "templates" / "report.html.j2").read_text()
    policy = re.search(r'<meta http-equiv="Content-Security-Policy"[^>]*>', text).group(0)
    bad = tmp_path / "bad.html"
    bad.write_text(f'<!DOCTYPE html><html><head>{policy}</head><body><p>x</p>'
                   f'<img src="{TAXI_SAMPLE.as_uri()}"></body></html>')
    result, _ = render(bad, tmp_path)
    assert any("Content Security Policy" in line for line in console_messages(result)), result.stderr[-2000:]
