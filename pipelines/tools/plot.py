"""2-D pictures of a published entity (PNG)."""
from __future__ import annotations

import numpy as np

from pipelines.core import fs
from pipelines.core.config_parse import config_from_dict
from pipelines.core.names import split_key
from pipelines.core.rundir import RunDir
from pipelines.tools.neighbors import load_entity


def principal_components(vectors: np.ndarray, n: int) -> np.ndarray:
    """[rows, dim] -> [rows, n]: the coordinates on the first `n` principal components (numpy SVD)."""
    centered = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    return centered @ components[:n].T


def project_2d(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[n, dim] -> [n, 2] by PCA (numpy SVD) or t-SNE (scikit-learn); 2-dim vectors are kept as they are."""
    if vectors.shape[1] == 2:
        return vectors
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, random_state=seed, perplexity=min(30, max(2, len(vectors) // 4))).fit_transform(vectors)
    return principal_components(vectors, 2)


def is_cross_entity(run: RunDir, entity_name: str) -> bool:
    """Whether the entity's key feature is a cross (keys "3|17")."""
    config = config_from_dict(run.read_manifest()["config"])
    entity = next((e for e in config.entities if e.name == entity_name), None)
    return entity is not None and config.features[entity.key].type == "cross"


def plot(run: RunDir, entity_name: str, out: str, method: str = "pca", sample: int = 2000, annotate: int = 40,
         size: tuple[int, int] = (1200, 900)) -> str:
    """A PNG of the entity in 2-D. A cross's keys ("day|hour") are coloured by their first part and
    annotated with the second (the course's day-of-week x hour-of-day picture); other entities are
    annotated with the labels of their most frequent keys."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    entity = load_entity(run, entity_name)
    rows = entity.rows_by_count()[:sample]
    points = project_2d(entity.vectors[rows], method)
    dpi = 100
    figure, axes = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    if len(rows) and is_cross_entity(run, entity_name):
        parts = [split_key(entity.keys[r]) for r in rows]
        first = [p[0] for p in parts]
        groups = sorted(set(first), key=lambda v: (len(v), v))
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for index, group in enumerate(groups):
            mask = np.array([f == group for f in first])
            axes.scatter(points[mask, 0], points[mask, 1], s=30, color=colours(index % colours.N), label=group)
        for (x, y), part in zip(points, parts):
            axes.annotate("|".join(part[1:]), (x, y), fontsize=7, alpha=0.8)
        axes.legend(title=entity_name.split("_")[0], fontsize=8)
    else:
        axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
        names = entity.labels()
        for (x, y), row in list(zip(points, rows))[:annotate]:
            axes.annotate(names[row][:30], (x, y), fontsize=7)
    shown = "as they are (2-D)" if entity.dim == 2 else method.upper()
    axes.set_title(f"{entity_name}: {len(rows)} vectors, {shown}")
    figure.tight_layout()
    with fs.local_target(out) as local:
        figure.savefig(local, dpi=dpi, format="png")
    plt.close(figure)
    return out
