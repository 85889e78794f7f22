"""The run report's figures: matplotlib drawings returned as inline SVG text.

Figures are built on `matplotlib.figure.Figure`, not pyplot, so nothing global (backend, open
figures) changes in the calling process. Text stays text (`svg.fonttype: none`): smaller than glyph
outlines, and the page's own font shows it. Scatter plots with many points embed their dots as
one PNG inside the SVG, so a map costs the same whatever the number of keys.
"""
from __future__ import annotations

import functools
import io
import itertools
import math
import re
from typing import Any, Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipelines.core.dates import display_order

# A short font list: SVG text repeats it on every label.
STYLE = {"svg.fonttype": "none", "font.size": 8, "font.family": "sans-serif",
         "font.sans-serif": ["DejaVu Sans", "Arial"], "axes.spines.top": False,
         "axes.spines.right": False, "axes.titlesize": 9, "legend.fontsize": 7, "legend.frameon": False}
MODEL_COLOUR, BASELINE_COLOUR = "#1f5fa8", "#b8c4d6"
RASTER_ABOVE = 300            # scatter points beyond which the dots are embedded as a PNG
_SALT = itertools.count()
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def format_number(value: Any) -> str:
    """A number as the page writes it: integers with thousands separators, floats to 4 significant
    digits (without an exponent from 1,000 up); None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isfinite(value) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def svg_figure(draw: Callable[..., Figure]) -> Callable[..., str]:
    """Turns a function that draws a Figure into one that returns it as SVG text."""
    @functools.wraps(draw)
    def to_svg(*args, **kwargs) -> str:
        # A salt per figure keeps the ids of clip paths and markers unique within the page.
        with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"f{next(_SALT)}"}):
            figure = draw(*args, **kwargs)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", dpi=150, metadata={"Date": None})
        text = buffer.getvalue()
        return _METADATA.sub("", text[text.index("<svg"):])
    return to_svg


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, list(np.atleast_1d(figure.subplots(1, columns)))


@svg_figure
def history_figure(history: dict[str, list[float]], best_epoch: int | None) -> Figure:
    """Loss per epoch (training and validation) and, beside it, the validation metrics."""
    losses = [name for name in ("loss", "val_loss") if name in history]
    metrics = [name for name in history if name.startswith("val_") and name != "val_loss"]
    figure, axes = _figure(7.2, 2.4, 2 if metrics else 1)
    for panel, names in zip(axes, (losses, metrics)):
        for name in names:
            epochs = np.arange(1, len(history[name]) + 1)
            panel.plot(epochs, history[name], marker="o", markersize=2.5, linewidth=1.2, label=name)
        if best_epoch:
            panel.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best epoch {best_epoch}")
        panel.set_xlabel("epoch")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.legend()
    axes[0].set_title("loss")
    if metrics:
        axes[1].set_title("validation metrics")
    return figure


@svg_figure
def metrics_figure(rows: Sequence[tuple[str, dict[str, float]]]) -> Figure:
    """Per metric, the model's value beside each same-run baseline's (horizontal bars)."""
    figure, axes = _figure(7.2, 0.45 + 0.22 * sum(len(values) for _, values in rows), len(rows))
    for panel, (metric, values) in zip(axes, rows):
        names = list(values)
        panel.barh(names, [values[n] for n in names],
                   color=[MODEL_COLOUR if n == "model" else BASELINE_COLOUR for n in names])
        panel.invert_yaxis()
        panel.set_title(metric)
        for y, name in enumerate(names):
            panel.annotate(format_number(values[name]), (values[name], y), xytext=(2, 0), textcoords="offset points",
                           va="center", fontsize=7)
    return figure


def _equal_mass_bins(quantiles: Sequence[float]) -> list[tuple[float, float, float]]:
    """(low, high, share of rows) of the bins between consecutive quantiles; bins on one value
    (a frequent exact value) are merged and widened to a sliver of the range so they show."""
    share = 1.0 / (len(quantiles) - 1)
    merged: list[list[float]] = []
    for low, high in zip(quantiles[:-1], quantiles[1:]):
        if merged and merged[-1][0] == low and merged[-1][1] == high:
            merged[-1][2] += share
        else:
            merged.append([low, high, share])
    sliver = (quantiles[-1] - quantiles[0]) / 60 or 1.0
    bins = []
    for low, high, mass in merged:
        if high - low < sliver:
            middle = (low + high) / 2
            low, high = middle - sliver / 2, middle + sliver / 2
        bins.append((low, high, mass))
    return bins


def _drawn_range(quantiles: Sequence[float]) -> tuple[int, int]:
    """The quantiles between which bins are drawn: an outer bin wider than all the inner bins
    together (a long tail, such as a few 100-mile taxi trips) would squeeze them into a sliver."""
    first, last = 0, len(quantiles) - 1
    inner = quantiles[last - 1] - quantiles[first + 1]
    if quantiles[first + 1] - quantiles[first] > inner:
        first += 1
    if quantiles[last] - quantiles[last - 1] > inner:
        last -= 1
    return first, last


@svg_figure
def histogram_figure(quantiles: Sequence[float], mean: float) -> Figure:
    """A histogram from approximate quantiles: equal-mass bins, each drawn at its density; a long
    outer tail is left out and its share and extreme value written instead."""
    figure, (axes,) = _figure(2.6, 1.15)
    first, last = _drawn_range(quantiles)
    for low, high, mass in _equal_mass_bins(quantiles[first:last + 1]):
        axes.bar(low, mass / (high - low), width=high - low, align="edge", color=MODEL_COLOUR, alpha=0.8)
    if quantiles[first] <= mean <= quantiles[last]:
        axes.axvline(mean, color="#c0392b", linewidth=1)
    share = 100 / (len(quantiles) - 1)
    tails = ([f"{share:.0f}% down to {format_number(quantiles[0])}"] if first else []) + \
            ([f"{share:.0f}% up to {format_number(quantiles[-1])}"] if last < len(quantiles) - 1 else [])
    if tails:
        axes.set_title("not drawn: " + "; ".join(tails), fontsize=6.5, loc="right")
    axes.set_yticks([])
    axes.spines["left"].set_visible(False)
    axes.xaxis.set_major_locator(MaxNLocator(4))
    axes.tick_params(labelsize=7)
    return figure


@svg_figure
def counts_figure(counts: np.ndarray) -> Figure:
    """Training count by rank, most frequent key first, on a log scale (the ranks too when there are
    many); keys never seen in training are left out."""
    ordered = np.sort(counts[counts > 0])[::-1]
    figure, (axes,) = _figure(3.4, 2.2)
    if len(ordered):
        # A few hundred log-spaced ranks draw the same line as every rank would.
        ranks = np.unique(np.geomspace(1, len(ordered), min(len(ordered), 400)).astype(int))
        axes.plot(ranks, ordered[ranks - 1], color=MODEL_COLOUR, linewidth=1.4, marker="." if len(ranks) < 60 else "")
        axes.set_yscale("log")
        if len(ordered) > 50:
            axes.set_xscale("log")
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("rank")
    axes.set_ylabel("training count")
    return figure


@svg_figure
def map_figure(points: np.ndarray, labels: dict[int, str], groups: Sequence[str] | None = None,
               group_title: str = "") -> Figure:
    """Points in 2-D; `labels` annotates some of them (row -> text); `groups` colours them (a
    legend titled `group_title`)."""
    figure, (axes,) = _figure(4.6, 3.6)
    points = points if points.shape[1] >= 2 else np.column_stack([points[:, 0], np.zeros(len(points))])
    raster = len(points) > RASTER_ABOVE
    if groups is None:
        axes.scatter(points[:, 0], points[:, 1], s=5 if raster else 16, alpha=0.6, color=MODEL_COLOUR, linewidths=0,
                     rasterized=raster)
    else:
        names = sorted(set(groups), key=display_order)   # Mon..Sun, as `plot` shows them
        colours = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
        for index, name in enumerate(names):
            mask = np.array([g == name for g in groups])
            axes.scatter(points[mask, 0], points[mask, 1], s=14, color=colours(index % colours.N), label=name,
                         linewidths=0, rasterized=raster)
        if len(names) <= 20:
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=0.8, title=group_title,
                        title_fontsize=7)
    if groups is None and labels:
        rows = list(labels)
        axes.scatter(points[rows, 0], points[rows, 1], s=14, color="#0b2f5b", linewidths=0)
    # Names get a light backing to stay legible over the dots; a cross's many short labels do not need it.
    backing = {"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.65, "linewidth": 0} if groups is None else None
    for row, text in labels.items():
        axes.annotate(text, tuple(points[row, :2]), xytext=(2, 2), textcoords="offset points", fontsize=6.5,
                      bbox=backing)
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


@svg_figure
def grid_figure(grid: np.ndarray, days: list[str]) -> Figure:
    """A day-of-week (rows) x hour-of-day (columns, 0-23) grid coloured by its values (NaN: no key)."""
    figure, (axes,) = _figure(7.2, 2.2)
    image = axes.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    axes.set_yticks(range(7), days)
    axes.set_xticks(range(24))
    axes.set_xlabel("hour of day")
    axes.set_ylabel("day of week")
    figure.colorbar(image, ax=axes, label="1st principal component", shrink=0.9)
    return figure
