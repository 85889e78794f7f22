"""The side-by-side table every throughput benchmark prints: time and rate beside the same-run baseline."""
from __future__ import annotations


def print_ratio_table(title: str, label: str, unit: str, count: int, results: list[tuple[str, float]]) -> None:
    """Prints a Markdown table; the first result is the baseline the others are divided by.

    Args:
        title: the line above the table.
        label: header of the first column.
        unit: what `count` counts ("rows", "entities").
        count: items each run processed.
        results: (name, seconds), baseline first.
    """
    base = results[0][1]
    print(f"\n{title}")
    print(f"| {label} | seconds | {unit}/s | time vs {results[0][0]} |\n| --- | --- | --- | --- |")
    for name, seconds in results:
        print(f"| {name} | {seconds:.1f} | {count / seconds:,.0f} | {seconds / base:.1f}x |")
