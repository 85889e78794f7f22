"""Beam I/O that moves batches instead of single records, so per-element overhead stays small.

One Beam element per CSV line or per tf.Example costs more than parsing the line or encoding the
example (measured in benchmarks/preprocess.py). These are ordinary Beam `FileBasedSource` and
`FileBasedSink` subclasses: splittable by byte offset, compressed by Beam, with Beam's temporary
files and atomic finalisation.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO, Iterator

import google_crc32c
from apache_beam.io import filebasedsink, filebasedsource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.range_trackers import OffsetRangeTracker

LINES_PER_BATCH = 131072
BYTES_PER_BATCH = 16 << 20


class LineBatchSource(filebasedsource.FileBasedSource):
    """Lines of text files as (file name, [line bytes, ...]) batches, split by byte ranges.

    A batch ends at `lines_per_batch` lines or BYTES_PER_BATCH bytes: large batches keep Beam's
    per-element cost and tf.Transform's per-batch cost low (measured in benchmarks/preprocess.py).

    A line belongs to the range its first byte falls in, as in Beam's text source; line endings
    ("\\n" or "\\r\\n") are removed; `skip_header_lines` skips that many lines at each file start.
    """

    def __init__(self, file_pattern: str, skip_header_lines: int = 0, lines_per_batch: int = LINES_PER_BATCH):
        super().__init__(file_pattern, compression_type=CompressionTypes.AUTO, splittable=True)
        self._skip = skip_header_lines
        self._lines_per_batch = lines_per_batch

    def read_records(self, file_name: str, range_tracker: OffsetRangeTracker) -> Iterator[tuple[str, list[bytes]]]:
        start = range_tracker.start_position()
        with self.open_file(file_name) as handle:
            position = 0
            if start > 0:
                # The line holding byte `start - 1` belongs to the previous range.
                handle.seek(start - 1)
                position = start - 1 + len(handle.readline())
            elif self._skip:
                for _ in range(self._skip):
                    position += len(handle.readline())
            batch: list[bytes] = []
            batch_start = position
            while range_tracker.try_claim(position):
                line = handle.readline()
                if not line:
                    break
                position += len(line)
                batch.append(line.rstrip(b"\n").rstrip(b"\r"))
                if len(batch) == self._lines_per_batch or position - batch_start >= BYTES_PER_BATCH:
                    yield file_name, batch
                    batch, batch_start = [], position
            if batch:
                yield file_name, batch


@dataclasses.dataclass(frozen=True)
class CorruptRecord:
    """Stands for the unreadable rest of a TFRecord file: where it starts and why it broke."""
    offset: int
    reason: str


class TFRecordBatchSource(filebasedsource.FileBasedSource):
    """Records of TFRecord files (gzip by suffix) as (file name, [record bytes, ...]) batches.

    Lengths and data are checked against their CRC32C. A corrupt frame cannot be skipped (its length
    is not trustworthy), so the rest of that file becomes one `CorruptRecord` in the last batch.
    """

    def __init__(self, file_pattern: str, records_per_batch: int = 16384):
        super().__init__(file_pattern, compression_type=CompressionTypes.AUTO, splittable=False)
        self._records_per_batch = records_per_batch

    def read_records(self, file_name: str, range_tracker: OffsetRangeTracker) -> Iterator[tuple[str, list]]:
        if not range_tracker.try_claim(range_tracker.start_position()):
            return
        batch: list = []
        offset = 0
        with self.open_file(file_name) as handle:
            while True:
                try:
                    record = _read_frame(handle)
                except (ValueError, OSError, EOFError) as error:  # OSError/EOFError: a broken gzip stream
                    batch.append(CorruptRecord(offset, f"corrupt TFRecord data at byte {offset}: {error}"))
                    break
                if record is None:
                    break
                offset += len(record) + 16
                batch.append(record)
                if len(batch) == self._records_per_batch:
                    yield file_name, batch
                    batch = []
        if batch:
            yield file_name, batch


def _read_frame(handle: BinaryIO) -> bytes | None:
    header = handle.read(12)
    if not header:
        return None
    if len(header) < 12 or header[8:] != _masked_crc(header[:8]):
        raise ValueError("length checksum mismatch")
    length = struct.unpack("<Q", header[:8])[0]
    data, footer = handle.read(length), handle.read(4)
    if len(data) < length or footer != _masked_crc(data):
        raise ValueError("data checksum mismatch")
    return data


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame_records(records: list[bytes]) -> bytes:
    """TFRecord framing of each record (length, masked CRC32C of length, data, masked CRC32C of data)."""
    parts = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (length, _masked_crc(length), record, _masked_crc(record))
    return b"".join(parts)


class TFRecordBatchSink(filebasedsink.FileBasedSink):
    """Writes lists of serialized records as TFRecord files (gzip when the suffix ends in .gz)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = ".tfrecord.gz"):
        super().__init__(file_path_prefix, coder=None, file_name_suffix=file_name_suffix,
                         mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO)

    def write_record(self, file_handle: BinaryIO, records: list[bytes]) -> None:
        file_handle.write(frame_records(records))
