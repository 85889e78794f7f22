"""Token documents: what sequences and graphs hand to tf.Transform instead of typed rows.

A sequences config turns each session of an event log into one document (its item ids in order),
a graph config each random walk (its node ids in order). A batch of documents is an Arrow record
batch with one column, named after the token feature's column, of type list<string>; tf.Transform
reads it as a `tf.io.VarLenFeature(tf.string)` (a SparseTensor [documents, tokens]), so ids stay
opaque: never lower-cased, never split.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines.core.config import Config

DOCUMENT_TYPE = pa.list_(pa.string())


def document_column(config: Config) -> str:
    """The column of a document batch: the token feature's (raw) column."""
    return config.features[config.token_feature].column


def document_batch(column: str, documents: list[list[str]]) -> pa.RecordBatch:
    """Documents given as lists of ids -> a record batch [documents] of list<string>."""
    return pa.RecordBatch.from_arrays([pa.array(documents, DOCUMENT_TYPE)], names=[column])


def ragged_batch(column: str, tokens: pa.Array, lengths: np.ndarray) -> pa.RecordBatch:
    """Documents given as their concatenated ids [tokens] and lengths [documents] -> a record batch."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(pa.array(offsets), tokens)], names=[column])


class TransformInputs(NamedTuple):
    """Record batches for AnalyzeAndTransform: typed rows, or token documents.

    `analyze` and `train` are the same data from two passes (two reads of the input or, on the
    in-process runner, one read replayed from scratch files; two walks of the graph): batches waiting
    for the transform_fn side input would otherwise be held by the runner in full (in memory on the
    in-process runner), so memory would grow with the data.
    """
    analyze: beam.PCollection
    train: beam.PCollection
    eval: beam.PCollection
