"""The lines that end a stage and a run: counts, the headline metric beside its baselines, where the
vectors are and what to try next."""
from __future__ import annotations

import operator
from typing import Any

from pipelines.core import fs
from pipelines.core.rundir import RunDir
from pipelines.tools.neighbors import load_entity

SHOWN_REASONS = 3
COLLISION_WARNING_SHARE = 0.05   # birthday collisions: 57 keys in 1,024 buckets share at 5%


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """ "1 entity", "3 entities"."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def preprocess_lines(facts: dict[str, Any]) -> list[str]:
    counts = facts["counts"]
    filtered = f", {counts['rows_filtered']:,} filtered out" if counts.get("rows_filtered") else ""
    # A graph's edges are not split (its walks are: see document_lines).
    split = "" if "nodes" in counts else f" ({counts['rows_train']:,} train, {counts['rows_eval']:,} eval)"
    lines = [f"{counts['rows_read']:,} rows read: {counts['rows_valid']:,} valid{split}, "
             f"{counts['rows_invalid']:,} invalid{filtered}"]
    if filtered:
        lines.append("filters: " + "; ".join(f"{count:,} x {reason}" for reason, count in facts["filtered"].items()))
    reasons = facts.get("invalid_reasons", {})
    if reasons:
        shown = "; ".join(f"{count:,} x {kind}" for kind, count in list(reasons.items())[:SHOWN_REASONS])
        more = f"; {len(reasons) - SHOWN_REASONS} more reasons" if len(reasons) > SHOWN_REASONS else ""
        lines.append(f"warning: invalid rows: {shown}{more} (rows and reasons in invalid/)")
    if counts.get("identity_out_of_range"):
        lines.append(f"warning: {counts['identity_out_of_range']:,} identity ids outside [0, num_buckets) went to "
                     "the default bucket")
    lines += document_lines(counts)
    if counts.get("documents_eval", counts["rows_eval"]) == 0:
        lines.append("warning: the eval split is empty: training runs without validation and reports no eval metrics")
    return lines


def document_lines(counts: dict[str, int]) -> list[str]:
    """What a sequences or a graph config made of its rows (nothing for other configs)."""
    lines = []
    if "groups" in counts:
        lines.append(f"{counts['documents_train']:,} train and {counts['documents_eval']:,} eval sessions; "
                     f"{counts['sessions_too_short']:,} shorter than sequences.min_length dropped")
        if counts["events_over_group_limit"]:
            lines.append(f"warning: {counts['events_over_group_limit']:,} events beyond sequences.max_group_events "
                         "(the oldest of the largest groups) were left out")
    if "nodes" in counts:
        lines.append(f"{counts['nodes']:,} nodes, {counts['edges']:,} edges; {counts['documents_train']:,} train and "
                     f"{counts['documents_eval']:,} eval walks, {counts['walk_tokens']:,} nodes walked")
        dropped = [f"{counts[name]:,} {what}" for name, what in (
            ("self_loops", "self-loops dropped"), ("duplicate_edges", "duplicate edges merged"),
            ("nodes_without_edges", "nodes without (out-)edges: their walks are the node alone"))
            if counts[name]]
        if dropped:
            lines.append("warning: " + "; ".join(dropped))
    return lines


def headline(metrics: dict[str, Any]) -> str:
    """The metric that matters beside its same-run baselines."""
    if "rmse" in metrics:
        of = " of log(1 + label)" if metrics.get("label_transform") == "log" else ""
        return (f"eval RMSE{of} {metrics['rmse']:.4g} (training mean {metrics.get('baseline_mean_rmse', float('nan')):.4g}, "
                f"linear {metrics.get('baseline_linear_rmse', float('nan')):.4g})")
    if "accuracy" in metrics:
        return (f"eval accuracy {metrics['accuracy']:.4g} "
                f"(majority class {metrics.get('baseline_majority_accuracy', float('nan')):.4g})")
    if "hr@10" in metrics:
        return (f"eval HR@10 {metrics['hr@10']:.4g}, NDCG@10 {metrics['ndcg@10']:.4g} "
                f"(popularity {metrics.get('baseline_popularity_hr@10', float('nan')):.4g}, "
                f"{metrics.get('baseline_popularity_ndcg@10', float('nan')):.4g})")
    if "words_per_second" in metrics:
        return f"{metrics['train_tokens']:,} training tokens, {metrics['words_per_second']:,.0f} words/s"
    return "no eval metrics (the eval split is empty)"


def baseline_warnings(metrics: dict[str, Any]) -> list[str]:
    """A warning when the model does no better than its simplest same-run baseline."""
    checks = (("rmse", "baseline_mean_rmse", "eval RMSE", "predicting the training mean", operator.ge),
              ("accuracy", "baseline_majority_accuracy", "eval accuracy", "predicting the majority class", operator.le),
              ("hr@10", "baseline_popularity_hr@10", "eval HR@10", "recommending the most popular", operator.le))
    for metric, baseline, name, simple, no_better in checks:
        if metric in metrics and baseline in metrics and no_better(metrics[metric], metrics[baseline]):
            return [f"warning: {name} {metrics[metric]:.4g} is no better than {simple} ({metrics[baseline]:.4g}): "
                    "the features may not carry the signal, or the model needs more epochs or data"]
    return []


def train_lines(metrics: dict[str, Any]) -> list[str]:
    epochs = f"{metrics.get('epochs_run', 0)} epochs"
    if metrics.get("best_epoch") and metrics["best_epoch"] != metrics.get("epochs_run"):
        epochs += f", the best ({metrics['best_epoch']}) kept"
    lines = [f"{headline(metrics)}; {epochs}, fit {metrics.get('fit_seconds', 0):.1f} s"]
    lines += baseline_warnings(metrics)
    warm = metrics.get("warm_start")
    if warm:
        parts = [f"{name} {'copied ' + format(f['rows_copied'], ',') + ' rows' if f['copied'] else 'not copied: ' + f['reason']}"
                 for name, f in warm["features"].items()]
        lines.append(f"warm start from {warm['from']}: " + "; ".join(parts))
    return lines


def embed_lines(facts: dict[str, Any]) -> list[str]:
    lines = [", ".join(f"{name} {count:,}" for name, count in facts["entities"].items()) + " vectors"]
    examples = facts.get("dropped_key_examples", {})
    for name, count in facts.get("dropped_keys", {}).items():
        if count:
            shown = ", ".join(repr(k) for k in examples.get(name, []))
            lines.append(f"warning: {name}: {count:,} keys left out: outside the vocabulary (seen only in eval "
                         f"rows, below frequency_threshold or beyond top_k), e.g. {shown}")
    for name, count in facts.get("untrained_keys", {}).items():
        if count:
            lines.append(f"warning: {name}: {counted(count, 'key')} never seen in training (count 0, e.g. only in "
                         "eval rows): their vectors are the initial random ones")
    for name, found in facts.get("collisions", {}).items():
        if found["share"] > COLLISION_WARNING_SHARE:
            example = f", e.g. {found['examples'][0]}" if found["examples"] else ""
            lines.append(f"warning: {name}: {found['keys_sharing_a_bucket']:,} of {found['keys']:,} keys share a hash "
                         f"bucket (and a vector) with another key; {found['buckets_used']:,} of "
                         f"{found['hash_buckets']:,} buckets used{example}. Raise hash_buckets, or use a vocabulary "
                         "(or exact: true for a cross)")
    for name, count in facts.get("metadata_missing", {}).items():
        if count:
            lines.append(f"warning: {name}: {count:,} keys are not in its metadata_from table (their columns are null)")
    aligned = facts.get("aligned_to")
    if aligned:
        spaces = "; ".join(f"{space} over {s['shared_keys']:,} shared keys, mean cosine {s['mean_cosine_after']:.3f}"
                           if s.get("aligned") else f"{space} not aligned (no shared keys)"
                           for space, s in aligned["spaces"].items())
        lines.append(f"aligned to {aligned['run']}: {spaces}")
    return lines


def next_commands(run: RunDir) -> list[str]:
    """Commands worth trying on a complete run (on its first entity)."""
    output = fs.join(run.output, "LATEST")
    entities = [e["name"] for e in run.read_manifest()["config"]["entities"]]
    if not run.published_entities():
        return []
    first = entities[0]
    vectors = load_entity(run, first)
    key = vectors.keys[int(vectors.rows_by_count()[0])] if vectors.keys else ""
    return [f'embedpipe neighbors {output} --entity {first} --key "{key}"',
            f"embedpipe plot {output} --entity {first} --out {first}.png"]


def run_lines(run: RunDir, seconds: float, report: str | None) -> list[str]:
    """The end of a complete run: where the Parquet, the report and the logs are, what to try next."""
    entities = ",".join(e["name"] for e in run.read_manifest()["config"]["entities"])
    lines = [f"{'run':<10} complete in {seconds:.0f} s (logs: {run.join('logs')}/)",
             f"  vectors  {run.join('embeddings')}/" + "{" + entities + "}/*.parquet"]
    if report:
        lines.append(f"  report   {report}")
    following = next_commands(run)
    if following:
        lines.append("  next     " + following[0])
        lines += ["           " + command for command in following[1:]]
    return lines
