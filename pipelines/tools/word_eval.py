"""Word-pair similarity evaluation: Spearman correlation of cosine similarities with human scores."""
from __future__ import annotations

from pipelines.core import fs
from pipelines.core.config_parse import config_from_dict
from pipelines.core.errors import UsageError
from pipelines.core.rundir import RunDir
from pipelines.core.vectors import EntityVectors


def read_word_pairs(path: str) -> list[tuple[str, str, float]]:
    """Tab-separated `word, word, score` lines; `#` comments and blank lines skipped (WordSim-353, SimLex-999)."""
    pairs = []
    with fs.open(path, "r") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                pairs.append((parts[0].lower(), parts[1].lower(), float(parts[2])))
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{number}: expected word<TAB>word<TAB>score") from None
    return pairs


def text_entity(run: RunDir) -> str:
    """The entity whose key is the run's text feature (the words)."""
    config = config_from_dict(run.read_manifest()["config"])
    for entity in config.entities:
        if entity.key in config.text_features:
            return entity.name
    raise UsageError(f"{run.path}: no entity is keyed by a text feature; pass --entity")


def word_similarity(entity: EntityVectors, pairs: list[tuple[str, str, float]]) -> dict[str, float]:
    """Spearman correlation over the pairs whose two words both have vectors, and the share that do not."""
    from scipy.stats import spearmanr
    rows = entity.key_to_index
    known = [(rows[a], rows[b], score) for a, b, score in pairs if a in rows and b in rows]
    result = {"pairs": len(pairs), "pairs_evaluated": len(known), "oov_share": 1 - len(known) / max(len(pairs), 1)}
    if len(known) >= 3:
        unit = entity.unit_vectors
        cosines = [float(unit[a] @ unit[b]) for a, b, _ in known]
        result["spearman"] = float(spearmanr(cosines, [s for _, _, s in known]).statistic)
    return result
