"""2-D pictures of a published entity (PNG)."""
from __future__ import annotations

import numpy as np

from pipelines.core import fs
from pipelines.core.config_parse import config_from_dict
from pipelines.core.dates import WEEKDAYS, display_order
from pipelines.core.errors import UsageError
from pipelines.core.names import split_key
from pipelines.core.rundir import RunDir
from pipelines.tools.neighbors import load_entity

IMAGE_FORMATS = ("png", "svg", "pdf")


def principal_components(vectors: np.ndarray, n: int) -> np.ndarray:
    """[rows, dim] -> [rows, n]: the coordinates on the first `n` principal components (numpy SVD),
    each component's largest entry positive: SVD's sign depends on the rows' order, which differs
    between two reads of the same Parquet, and the same vectors should draw the same picture."""
    centered = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    components = components[:n]
    largest = components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)]
    return centered @ (components * np.where(largest < 0, -1.0, 1.0)[:, None]).T


def project_2d(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[n, dim] -> [n, 2] by PCA (numpy SVD) or t-SNE (scikit-learn); 2-dim vectors are kept as they are."""
    if vectors.shape[1] == 2:
        return vectors
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, random_state=seed, perplexity=min(30, max(2, len(vectors) // 4))).fit_transform(vectors)
    return principal_components(vectors, 2)


def _draw_grid(axes, grid: np.ndarray, days: list[str], entity_name: str) -> None:
    image = axes.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="coolwarm")
    axes.set_yticks(range(7), days)
    axes.set_xticks(range(24), [f"{h:02d}" for h in range(24)], fontsize=8)
    axes.set_xlabel("hour of day")
    axes.set_title(f"{entity_name}: first principal component of each day x hour cell")
    axes.figure.colorbar(image, ax=axes, fraction=0.025, pad=0.01)


def is_cross_entity(run: RunDir, entity_name: str) -> bool:
    """Whether the entity's key feature is a cross (keys "3|17")."""
    config = config_from_dict(run.read_manifest()["config"])
    entity = next((e for e in config.entities if e.name == entity_name), None)
    return entity is not None and config.features[entity.key].type == "cross"


def day_hour_grid(keys: list[str], vectors: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
    """[7, 24]: each day-of-week x hour cell's first principal component, NaN where no key has it,
    and the rows' day names; None unless every key is such a pair. Days are "Mon".."Sun" (date
    parts) or 1-7 (a day column, whose meaning is the data's), hours 0-23, in either order."""
    if not 1 < len(keys) <= 7 * 24:
        return None
    pairs = [split_key(key) for key in keys]
    if any(len(pair) != 2 for pair in pairs):
        return None
    for day, hour in ((0, 1), (1, 0)):
        days = [_day_row(pair[day]) for pair in pairs]
        hours = [int(pair[hour]) if pair[hour].isdigit() and int(pair[hour]) < 24 else None for pair in pairs]
        if None not in days and None not in hours:
            grid = np.full((7, 24), np.nan)
            grid[days, hours] = principal_components(vectors, 1)[:, 0]
            named = all(pair[day] in WEEKDAYS for pair in pairs)
            return grid, list(WEEKDAYS) if named else [str(row) for row in range(1, 8)]
    return None


def _day_row(part: str) -> int | None:
    if part in WEEKDAYS:
        return WEEKDAYS.index(part)
    return int(part) - 1 if part.isdigit() and 1 <= int(part) <= 7 else None


def entity_clusters(run: RunDir, entity_name: str, keys: list[str]) -> np.ndarray | None:
    """Each key's k-means cluster, as `embedpipe cluster` wrote them for the entity [keys] (-1 for a key
    it did not cluster); None when it has not run for the entity."""
    directory = run.clusters_dir(entity_name)
    if not fs.exists(directory):
        return None
    table = fs.read_parquet(directory, columns=["key", "cluster"])
    found = dict(zip(table.column("key").to_pylist(), table.column("cluster").to_pylist()))
    return np.array([found.get(key, -1) for key in keys], np.int64)


def image_format(out: str) -> str:
    """The picture's format from the file name's extension (PNG when it has none).

    Raises:
        UsageError: an extension matplotlib is not asked to write here.
    """
    name = fs.basename(out) if not out.endswith("/") else ""
    if not name:
        raise UsageError(f"--out {out}: name a file, not a directory")
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else "png"
    if extension not in IMAGE_FORMATS:
        raise UsageError(f"--out {out}: write a .png, .svg or .pdf file")
    return extension


def plot(run: RunDir, entity_name: str, out: str, method: str = "pca", sample: int = 2000, annotate: int = 40,
         size: tuple[int, int] = (1200, 900)) -> str:
    """A picture of the entity in 2-D: PNG, SVG or PDF by `out`'s extension (sizes in PNG pixels).

    A cross's keys ("day|hour") are coloured by their first part and annotated with the second (the
    course's day-of-week x hour-of-day picture); a day-of-week x hour cross also gets a 7 x 24 grid
    coloured by the first principal component, where rush hours and nights show at a glance. Other
    entities are annotated with the labels of their most frequent keys, and coloured by cluster once
    `embedpipe cluster` has run for them."""
    fmt = image_format(out)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    entity = load_entity(run, entity_name)
    rows = entity.rows_by_count()[:sample]
    points = project_2d(entity.vectors[rows], method)
    dpi = 100
    grid = day_hour_grid(entity.keys, entity.vectors)
    if grid is None:
        figure, axes = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    else:
        figure, (axes, grid_axes) = plt.subplots(2, 1, figsize=(size[0] / dpi, (size[1] + 400) / dpi), dpi=dpi,
                                                 gridspec_kw={"height_ratios": [3, 1.3]})
        _draw_grid(grid_axes, *grid, entity_name)
    clusters = None
    if len(rows) and is_cross_entity(run, entity_name):
        parts = [split_key(entity.keys[r]) for r in rows]
        first = [p[0] for p in parts]
        groups = sorted(set(first), key=display_order)
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for index, group in enumerate(groups):
            mask = np.array([f == group for f in first])
            axes.scatter(points[mask, 0], points[mask, 1], s=30, color=colours(index % colours.N), label=group)
        for (x, y), part in zip(points, parts):
            axes.annotate("|".join(part[1:]), (x, y), fontsize=7, alpha=0.8)
        axes.legend(title=entity_name.split("_")[0], fontsize=8)
    else:
        clusters = entity_clusters(run, entity_name, entity.keys)
        if clusters is None:
            axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
        else:
            colours = plt.get_cmap("tab20")
            axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7,
                         color=[colours(int(c) % colours.N) if c >= 0 else "lightgrey" for c in clusters[rows]])
        names = entity.labels()
        for (x, y), row in list(zip(points, rows))[:annotate]:
            axes.annotate(names[row][:30], (x, y), fontsize=7)
    shown = "as they are (2-D)" if entity.dim == 2 else {"pca": "PCA", "tsne": "t-SNE"}[method]
    coloured = ("" if clusters is None else
                f", coloured by their {len(np.unique(clusters[clusters >= 0]))} k-means clusters (embedpipe cluster)")
    axes.set_title(f"{entity_name}: {len(rows):,} vectors, {shown}{coloured}")
    figure.tight_layout()
    with fs.local_target(out) as local:
        figure.savefig(local, dpi=dpi, format=fmt)
    plt.close(figure)
    return out
