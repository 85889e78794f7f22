"""Entity vectors in memory, kept apart from any training state (as gensim's KeyedVectors are).

`EntityVectors` holds one published entity: its keys, vectors [n, dim], counts and metadata
columns, an O(1) key -> row map, and the similarity its vectors are meant for. It reads and writes
embedpipe's Parquet schema and word2vec/GloVe text, on any filesystem `fs` reaches.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools

import numpy as np
import pyarrow as pa

from pipelines.core import fs
from pipelines.core.errors import UsageError

EMBEDDING = "embedding"


class UnknownKeyError(UsageError, LookupError):
    """A key (or entity) that the published vectors do not have; the message suggests close ones."""


def vectors_of(table: pa.Table) -> np.ndarray:
    """The table's `embedding` column as [rows, dim] float32, without a copy when it can."""
    dim = table.schema.field(EMBEDDING).type.list_size
    return table.column(EMBEDDING).combine_chunks().flatten().to_numpy().reshape(-1, dim)


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """[rows, dim] vectors as a fixed_size_list<float32>[dim] array."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def metadata_type(arrow_type: pa.DataType) -> pa.DataType:
    """The Parquet type a metadata column is published as: simple input types kept, anything
    nested as a string."""
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_floating(arrow_type):
        return pa.float64()
    if pa.types.is_boolean(arrow_type):
        return pa.bool_()
    return pa.string()


@dataclasses.dataclass(frozen=True)
class EntityVectors:
    """Attributes:
        keys: each row's key [n].
        vectors: [n, dim] float32.
        table: the other columns (count, metadata) [n rows].
        similarity: `cosine` or `dot`, how scores between these vectors are meant.
        metadata: the Parquet file's key-value metadata (run_id, entity, dim, ...).
    """
    keys: list[str]
    vectors: np.ndarray
    table: pa.Table
    similarity: str = "cosine"
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_table(cls, table: pa.Table) -> "EntityVectors":
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return cls(table.column("key").to_pylist(), vectors_of(table), table.drop_columns([EMBEDDING]),
                   metadata.get("similarity", "cosine"), metadata)

    @classmethod
    def load(cls, path: str) -> "EntityVectors":
        """A Parquet file or directory in embedpipe's schema (key, embedding, count, metadata...)."""
        return cls.from_table(fs.read_parquet(path))

    @functools.cached_property
    def key_to_index(self) -> dict[str, int]:
        return {key: row for row, key in enumerate(self.keys)}

    @functools.cached_property
    def unit_vectors(self) -> np.ndarray:
        norms = np.linalg.norm(self.vectors, axis=1)
        return self.vectors / np.where(norms > 0, norms, 1.0)[:, None]

    @property
    def similarity_vectors(self) -> np.ndarray:
        """Vectors whose dot product is the similarity: unit length for cosine, as published for dot."""
        return self.unit_vectors if self.similarity == "cosine" else self.vectors

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def counts(self) -> np.ndarray:
        if "count" not in self.table.column_names:
            return np.zeros(len(self.keys), np.int64)
        return self.table.column("count").to_numpy(zero_copy_only=False)

    def rows_by_count(self) -> np.ndarray:
        """Row numbers, most frequent key first (ties in table order)."""
        return np.argsort(-self.counts, kind="stable")

    @property
    def metadata_columns(self) -> list[str]:
        """Columns besides key and count (title, year, ...)."""
        return [c for c in self.table.column_names if c not in ("key", "count")]

    @property
    def label_column(self) -> str | None:
        """The first string metadata column (a title reads better than an id), if any."""
        return next((c for c in self.metadata_columns if pa.types.is_string(self.table.schema.field(c).type)), None)

    def labels(self) -> list[str]:
        """A readable name per row: its label column when it has one, else its key."""
        column = self.label_column
        if column is None:
            return list(self.keys)
        return [value or key for key, value in zip(self.keys, self.table.column(column).to_pylist())]

    def find_row(self, key: str) -> int:
        """Row of `key`; failing that, of the one row whose string metadata equals it (a title).

        Raises:
            UnknownKeyError: naming keys that differ only in case, or the closest keys.
        """
        row = self.key_to_index.get(key)
        if row is not None:
            return row
        for column in self.metadata_columns:
            if pa.types.is_string(self.table.schema.field(column).type):
                rows = np.flatnonzero(np.asarray(self.table.column(column).to_pylist(), dtype=object) == key)
                if len(rows) > 1:
                    raise UnknownKeyError(f"{key!r} names {len(rows)} rows by {column!r}; give one of their keys: "
                                          f"{', '.join(repr(self.keys[r]) for r in rows[:5])}")
                if len(rows) == 1:
                    return int(rows[0])
        raise UnknownKeyError(f"key {key!r} not found among {len(self.keys):,} keys{self._suggest(key)}")

    def _suggest(self, key: str) -> str:
        folded = [k for k in self.keys if k.casefold() == key.casefold()]
        if folded:
            return f"; keys are case-sensitive: did you mean {', '.join(map(repr, folded[:3]))}?"
        close = difflib.get_close_matches(key, self.keys[:200_000], n=3, cutoff=0.75)
        return f"; close keys: {', '.join(map(repr, close))}" if close else ""

    def to_table(self) -> pa.Table:
        """The Parquet table in embedpipe's schema, file metadata kept."""
        columns = {"key": pa.array(self.keys, pa.string()), EMBEDDING: vector_array(self.vectors)}
        columns.update({name: self.table.column(name) for name in self.table.column_names if name != "key"})
        table = pa.table(columns)
        return table.replace_schema_metadata({**self.metadata, "similarity": self.similarity, "dim": str(self.dim)})

    def save_word2vec(self, path: str) -> None:
        """word2vec text format (a "count dim" header, then `key v1 v2 ...`), readable by gensim's
        `KeyedVectors.load_word2vec_format`. Keys holding whitespace cannot be written this way."""
        bad = next((k for k in self.keys if not k or any(c.isspace() for c in k)), None)
        if bad is not None:
            raise ValueError(f"key {bad!r} is empty or holds whitespace; word2vec text cannot hold it")
        lines = [f"{len(self.keys)} {self.dim}\n"]
        lines += [key + " " + " ".join(f"{x:.8g}" for x in row) + "\n" for key, row in zip(self.keys, self.vectors)]
        fs.write_text_atomic(path, "".join(lines))

    @classmethod
    def load_word2vec(cls, path: str) -> "EntityVectors":
        """word2vec or GloVe text: `key v1 v2 ...` per line, with an optional "count dim" header.

        Raises:
            ValueError: naming the line whose vector has another length or is not numbers.
        """
        keys, rows = [], []
        with fs.open(path, "r") as handle:
            for number, line in enumerate(handle, 1):
                parts = line.rstrip("\n").rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue
                if not parts[0]:
                    continue
                try:
                    row = np.asarray(parts[1:], np.float32)
                except ValueError:
                    raise ValueError(f"{path}:{number}: expected a key and numbers") from None
                if rows and len(row) != len(rows[0]):
                    raise ValueError(f"{path}:{number}: {len(row)} values, the first vector has {len(rows[0])}")
                keys.append(parts[0])
                rows.append(row)
        if not rows:
            raise ValueError(f"{path}: no vectors")
        return cls(keys, np.stack(rows), pa.table({"key": keys}))


def is_word2vec_file(path: str) -> bool:
    """True for a vector file in text form (not Parquet)."""
    return not (path.endswith(".parquet") or fs.isdir(path))


def load_vector_file(path: str) -> EntityVectors:
    """Pre-trained vectors: Parquet in embedpipe's schema, or word2vec/GloVe text."""
    return EntityVectors.load_word2vec(path) if is_word2vec_file(path) else EntityVectors.load(path)


def shared_rows(old: EntityVectors, new: EntityVectors, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of the keys both hold: (old rows, new rows, keys), at most `limit` keys (the first in key order)."""
    keys = sorted(set(old.key_to_index) & set(new.key_to_index))[:limit]
    return (np.array([old.key_to_index[k] for k in keys], int), np.array([new.key_to_index[k] for k in keys], int),
            keys)


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal R [dim, dim] minimising ||source @ R - target|| (Schönemann's SVD solution)."""
    u, _, vt = np.linalg.svd(source.T.astype(np.float64) @ target.astype(np.float64))
    return (u @ vt).astype(np.float32)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between each row of a [n, dim] and the same row of b [n, dim] (0 for a zero row)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between the rows of a [n, dim] and b [n, dim]."""
    return float(np.mean(row_cosines(a, b)))
