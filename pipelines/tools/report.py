"""The run report: one self-contained HTML page of what a run did and what it learned.

`embedpipe run` writes it to `<run>/report.html` when the run ends (a failed run too), and
`embedpipe report RUN_DIR [--against OLD_RUN] [-o FILE]` writes it for any run the filesystem layer
reaches. Every number comes from the run's own files (manifest.json, metrics.json,
data/statistics.json, invalid/, embeddings/); neighbours and drift come from the functions behind
`neighbors` and `compare`. The page fetches nothing: its CSS is inline and its figures are inline
SVG (`report_figures`).

Only drawing is sampled: an entity's map shows its MAP_SAMPLE most frequent keys (the page says
so); counts, neighbours and drift use every key.
"""
from __future__ import annotations

import datetime
import json
from typing import Any

import numpy as np

from pipelines.core import fs
from pipelines.core.config import Config, EntityConfig
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import UsageError
from pipelines.core.names import split_key
from pipelines.core.rundir import STAGES, RunDir, resolve_run
from pipelines.core.vectors import EntityVectors
from pipelines.tools import report_figures as figures
from pipelines.tools.drift import entity_drift
from pipelines.tools.neighbors import load_entity, most_similar
from pipelines.tools.plot import day_hour_grid, is_cross_entity, project_2d

MAP_SAMPLE = 2000          # most frequent keys drawn on an entity's map
MAP_LABELS = 20            # of which labelled (a cross of at most CROSS_LABELS keys: all of them)
CROSS_LABELS = 200
NEIGHBOR_KEYS, NEIGHBORS = 10, 5
MOVED_KEYS = 20
INVALID_EXAMPLES = 3
INVALID_SCAN = 100_000     # invalid rows read at most while looking for examples
TEXT_CHARS = 300
TRAINING_FACTS = ("epochs_run", "best_epoch", "fit_seconds", "strategy", "workers")


def _read_json(path: str) -> Any:
    return json.loads(fs.read_text(path)) if fs.exists(path) else None


def _clip(text: str, limit: int = TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def format_share(value: float | None) -> str:
    """A share as a percentage; small non-zero shares keep three decimals."""
    if value is None:
        return "–"
    return f"{value:.3%}" if 0 < value < 0.001 else f"{value:.1%}"


def format_fixed(value: float | None) -> str:
    """Cosines and overlaps, which live in [-1, 1]: four decimals."""
    return "–" if value is None else f"{value:.4f}"


def summary_section(run: RunDir, manifest: dict, metrics: dict | None) -> dict:
    """Identity of the run, every stage's status and time, versions, warm start and alignment; for
    a run that stopped, the stage, its error and its log."""
    stages = manifest.get("stages", {})
    rows = [{"stage": stage, "status": stages.get(stage, {}).get("status", "not run"),
             **{field: stages.get(stage, {}).get(field) for field in ("started_at", "seconds", "runner")},
             "log": run.log_path(stage) if stage in stages else None} for stage in STAGES]
    status = run.status()
    stage, _, state = status.partition(": ")
    failure = None
    if state in ("failed", "interrupted"):
        failure = {"stage": stage, "status": state, "error": stages[stage].get("error", ""),
                   "log": run.log_path(stage)}
    warm = manifest["config"].get("warm_start")
    return {"name": manifest.get("name"), "run_id": run.run_id, "path": run.path, "created_at": manifest.get("created_at"),
            "status": status, "complete": status == "complete", "failure": failure, "stages": rows,
            "versions": manifest.get("versions", {}), "warm_start": warm,
            "warm_features": ((metrics or {}).get("warm_start") or {}).get("features", {}),
            "align_to": manifest["config"].get("align_to"), "aligned": stages.get("embed", {}).get("aligned_to")}


def invalid_examples(run: RunDir, kinds: list[str]) -> dict[str, list[dict]]:
    """Up to INVALID_EXAMPLES rows of `invalid/` per reason kind (reading at most INVALID_SCAN rows)."""
    examples: dict[str, list[dict]] = {kind: [] for kind in kinds}
    scanned = 0
    for path in fs.glob(fs.join(run.invalid_dir, "*.jsonl")):
        with fs.open(path, "r") as handle:
            for line in handle:
                if scanned >= INVALID_SCAN or all(len(rows) >= INVALID_EXAMPLES for rows in examples.values()):
                    return examples
                scanned += 1
                row = json.loads(line)
                # Rows written before kinds were recorded group under their reason.
                found = examples.get(row.get("kind", row["reason"]))
                if found is not None and len(found) < INVALID_EXAMPLES:
                    found.append({"file": row["file"], "record": _clip(row["record"]), "reason": _clip(row["reason"])})
    return examples


def data_section(run: RunDir, manifest: dict, config: Config, metrics: dict | None) -> dict:
    """Row counts, invalid rows by reason, and per feature its statistics (train split) and eval OOV share."""
    record = manifest.get("stages", {}).get("preprocess", {})
    reasons = record.get("invalid_reasons", {})
    examples = invalid_examples(run, list(reasons)) if reasons else {}
    statistics = _read_json(run.statistics_path) if record.get("status") == "succeeded" else None
    found = (statistics or {}).get("features", {})
    oov = (metrics or {}).get("eval_oov_share", {})
    features = []
    for name, feature in config.features.items():
        stats = found.get(name, {})
        histogram = figures.histogram_figure(stats["quantiles"], stats["mean"]) if stats.get("quantiles") else None
        features.append({"name": name, "type": feature.type, "columns": ", ".join(feature.raw_columns),
                         "numeric": feature.type == "numeric", "stats": stats, "oov": oov.get(name),
                         "histogram": histogram})
    return {"status": record.get("status", "not run"), "counts": record.get("counts", {}),
            "reasons": [{"kind": kind, "count": count, "examples": examples.get(kind, [])}
                        for kind, count in reasons.items()],
            "has_statistics": statistics is not None, "features": features}


def metric_rows(metrics: dict) -> list[dict]:
    """Each final metric of the model beside its same-run baselines (`baseline_<name>_<metric>`);
    metrics that have baselines first."""
    scalars = {k: v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TRAINING_FACTS}
    rows = []
    for name in (k for k in scalars if not k.startswith("baseline_")):
        baselines = {key[len("baseline_"):-len(name) - 1]: {"key": key, "value": value} for key, value in scalars.items()
                     if key.startswith("baseline_") and key.endswith("_" + name)}
        rows.append({"metric": name, "value": scalars[name], "baselines": baselines})
    return sorted(rows, key=lambda row: not row["baselines"])


def training_section(manifest: dict, metrics: dict | None) -> dict:
    """Loss and validation metrics per epoch, final metrics beside baselines, how training ran."""
    record = manifest.get("stages", {}).get("train", {})
    if metrics is None:
        return {"available": False, "status": record.get("status", "not run")}
    history = metrics.get("history") or {}
    rows = metric_rows(metrics)
    bars = [(row["metric"], {"model": row["value"], **{n: b["value"] for n, b in row["baselines"].items()}})
            for row in rows if row["baselines"]]
    return {"available": True, "kind": manifest["config"]["model"]["kind"], "rows": rows,
            "baseline_names": list(dict.fromkeys(n for row in rows for n in row["baselines"])),
            "facts": {name: metrics.get(name) for name in TRAINING_FACTS},
            "history_figure": figures.history_figure(history, metrics.get("best_epoch")) if history.get("loss") else None,
            "metrics_figure": figures.metrics_figure(bars) if bars else None}

def spread_labels(points: np.ndarray, count: int, box: tuple[float, float] = (0.3, 0.045)) -> list[int]:
    """Up to `count` rows of `points` (most frequent first) to label, skipping a row whose label
    box (a share of the map's width and height) would overlap one chosen before: frequent keys
    crowd together, and their labels would pile up."""
    extent = np.ptp(points[:, :2], axis=0) if len(points) else np.ones(2)
    scaled = points[:, :2] / np.where(extent > 0, extent, 1.0)
    chosen: list[int] = []
    for row in range(min(len(points), 10 * count)):
        if all(np.any(np.abs(scaled[row] - scaled[other]) >= box) for other in chosen):
            chosen.append(row)
            if len(chosen) == count:
                break
    return chosen


def entity_section(run: RunDir, entity: EntityConfig, config: Config, vectors: EntityVectors, embed: dict) -> dict:
    """Counts, a 2-D map (and a day x hour grid), and the neighbours of the most frequent keys."""
    counts, order, labels = vectors.counts, vectors.rows_by_count(), vectors.labels()
    drawn = order[:MAP_SAMPLE]
    points = project_2d(vectors.vectors[drawn], "pca")
    groups, grid, group_title = None, None, ""
    if is_cross_entity(run, entity.name):
        group_title = config.features[entity.key].columns[0]
        parts = [split_key(vectors.keys[row]) for row in drawn]
        groups = [p[0] for p in parts]   # coloured by the first part, labelled with the rest (as `plot`)
        shown = len(parts) if len(parts) <= CROSS_LABELS else MAP_LABELS
        names = {i: "|".join(p[1:]) for i, p in enumerate(parts[:shown])}
        grid = day_hour_grid(vectors.keys, vectors.vectors)
    else:
        names = {i: _clip(labels[drawn[i]], 28) for i in spread_labels(points, MAP_LABELS)}
    top = [int(row) for row in order[:NEIGHBOR_KEYS]]
    neighbors = [{"key": vectors.keys[row], "label": labels[row], "count": int(counts[row]),
                  "neighbors": [{"key": vectors.keys[i], "label": labels[i], "score": score} for i, score in found]}
                 for row, found in zip(top, most_similar(vectors, top, NEIGHBORS))]
    return {"name": entity.name, "published": True, "key": entity.key, "feature_type": config.features[entity.key].type,
            "size": len(vectors.keys), "dim": vectors.dim, "similarity": vectors.similarity,
            "label_column": vectors.label_column, "unseen": int(np.sum(counts == 0)), "drawn": len(drawn),
            "group_title": group_title if groups else None,
            "dropped": embed.get("dropped_keys", {}).get(entity.name, 0),
            "dropped_examples": embed.get("dropped_key_examples", {}).get(entity.name, []),
            "counts_figure": figures.counts_figure(counts), "map_figure": figures.map_figure(points, names, groups, group_title),
            "grid_figure": None if grid is None else figures.grid_figure(*grid), "neighbors": neighbors}


def drift_section(run: RunDir, manifest: dict, against: RunDir | None, loaded: dict[str, EntityVectors]) -> dict:
    """Drift of every entity against `against`, else against the run this one was aligned to."""
    aligned = manifest.get("stages", {}).get("embed", {}).get("aligned_to")
    source = "given with --against"
    if against is None and aligned:
        try:
            against, source = resolve_run(aligned["run"]), "the run this one was aligned to"
        except UsageError:
            return {"against": None, "note": f"this run was aligned to {aligned['run']}, which is no longer there"}
    if against is None:
        return {"against": None, "note": "no earlier run to compare with: give one with --against OLD_RUN, "
                                         "or align runs with align_to in the config"}
    old_entities = against.published_entities()
    entities = []
    for name, vectors in loaded.items():
        if name not in old_entities:
            entities.append({"name": name, "facts": None, "moved": []})
            continue
        drift = entity_drift(load_entity(against, name), vectors)
        labels, rows = vectors.labels(), vectors.key_to_index
        moved = [{"key": key, "label": labels[rows[key]], "cosine": cosine} for key, cosine in drift.most_moved(MOVED_KEYS)]
        entities.append({"name": name, "facts": drift.facts, "moved": moved})
    return {"against": against.path, "against_id": against.run_id, "source": source, "entities": entities}


def report_context(run: RunDir, against: RunDir | None = None) -> dict:
    """Everything the page shows, section by section."""
    manifest = run.read_manifest()
    config = config_from_dict(manifest["config"])
    stages = manifest.get("stages", {})
    metrics = _read_json(run.metrics_path) if stages.get("train", {}).get("status") == "succeeded" else None
    published = run.published_entities()
    embed = stages.get("embed", {})
    loaded = {e.name: load_entity(run, e.name) for e in config.entities if e.name in published}
    entities = [entity_section(run, e, config, loaded[e.name], embed) if e.name in loaded
                else {"name": e.name, "published": False} for e in config.entities]
    return {"summary": summary_section(run, manifest, metrics), "data": data_section(run, manifest, config, metrics),
            "training": training_section(manifest, metrics), "entities": entities,
            "embed_status": embed.get("status", "not run"), "drift": drift_section(run, manifest, against, loaded),
            "map_sample": MAP_SAMPLE, "neighbors_shown": NEIGHBORS,
            "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def render_report(run: RunDir, against: RunDir | None = None) -> str:
    """The report page of `run` as HTML text."""
    import jinja2
    environment = jinja2.Environment(loader=jinja2.PackageLoader("pipelines.tools", "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(num=figures.format_number, share=format_share, fixed=format_fixed)
    return environment.get_template("report.html.j2").render(**report_context(run, against))


def write_report(run: RunDir, out: str | None = None, against: RunDir | None = None) -> str:
    """Writes the page (default `<run>/report.html`, any filesystem) and returns where."""
    out = out or run.report_path
    fs.write_text_atomic(out, render_report(run, against))
    return out
