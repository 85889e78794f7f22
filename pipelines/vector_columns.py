"""The published `embedding` column (fixed_size_list<float32>[dim]) to and from NumPy, without copies."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors_of(table: pa.Table) -> np.ndarray:
    """The table's `embedding` column as [rows, dim] float32."""
    dim = table.schema.field("embedding").type.list_size
    return table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """[rows, dim] vectors as a fixed_size_list<float32>[dim] array."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
