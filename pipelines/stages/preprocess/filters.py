"""Row filters (`input.filters`): rows outside a range or a set of values are left out of training,
and counted per filter, never silently (they are valid rows, so they are not `invalid/`)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.config import RowFilter


def passes(table: pa.Table, row_filter: RowFilter) -> np.ndarray:
    """[rows] bool: the typed rows the filter keeps (a missing value is never kept)."""
    column = table.column(row_filter.column)
    if row_filter.values:
        kept = pc.is_in(column.cast(pa.string()), value_set=pa.array(row_filter.values, pa.string()))
        return pc.fill_null(kept, False).to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type):
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    numbers = pc.fill_null(column.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False)
    low = -np.inf if row_filter.min is None else row_filter.min
    high = np.inf if row_filter.max is None else row_filter.max
    return (numbers >= low) & (numbers <= high)   # NaN compares False: missing rows go


def apply_filters(table: pa.Table, filters: tuple[RowFilter, ...]) -> tuple[pa.Table, dict[str, int]]:
    """The rows every filter keeps, and how many rows each filter left out (the first that did)."""
    keep = np.ones(table.num_rows, bool)
    dropped = {}
    for row_filter in filters:
        kept = passes(table, row_filter)
        dropped[row_filter.describe()] = int(np.sum(keep & ~kept))
        keep &= kept
    return (table if keep.all() else table.filter(pa.array(keep))), dropped
