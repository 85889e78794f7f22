"""Beam I/O that moves batches instead of single records, so per-element overhead stays small.

One Beam element per CSV line or per tf.Example costs more than parsing the line or encoding the
example (measured in benchmarks/preprocess.py). These are ordinary Beam `FileBasedSource` and
`FileBasedSink` subclasses: splittable by byte offset, compressed by Beam, with Beam's temporary
files and atomic finalisation.
"""
from __future__ import annotations

import collections
import dataclasses
import struct
from typing import BinaryIO, Iterator

import google_crc32c
from apache_beam.io import filebasedsink, filebasedsource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.range_trackers import OffsetRangeTracker

LINES_PER_BATCH = 131072
BYTES_PER_BATCH = 16 << 20
MAX_RECORD_BYTES = 4 << 20


class LineBatchSource(filebasedsource.FileBasedSource):
    """Records of text files as (file name, [record bytes, ...]) batches, split by byte ranges.

    A record is a line, or with `quoted_newlines` a CSV record: a line whose double quotes are
    unbalanced continues on the next lines until they balance (RFC 4180 quoted fields may hold
    newlines; a stray quote that never balances within MAX_RECORD_BYTES leaves its line a record
    of its own, which typing then rejects with its reason). A record belongs to the range its
    first byte falls in and is read whole even past the range's end, as Beam's text source does
    with lines; its final line ending ("\\n" or "\\r\\n") is removed. `skip_header_lines` skips that
    many lines at each file start.

    A batch ends at `lines_per_batch` records or BYTES_PER_BATCH bytes: large batches keep Beam's
    per-element cost and tf.Transform's per-batch cost low (measured in benchmarks/preprocess.py).
    """

    def __init__(self, file_pattern: str, skip_header_lines: int = 0, lines_per_batch: int = LINES_PER_BATCH,
                 quoted_newlines: bool = False, splittable: bool = True):
        super().__init__(file_pattern, compression_type=CompressionTypes.AUTO, splittable=splittable)
        self._skip = skip_header_lines
        self._lines_per_batch = lines_per_batch
        self._quoted_newlines = quoted_newlines

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
            lines = _Lines(handle, position)
            batch: list[bytes] = []
            batch_bytes = 0
            while True:
                line = lines.next()
                if line is None or not range_tracker.try_claim(line[0]):
                    break
                record = self._record(line, lines) if self._quoted_newlines and _open_quote(line[1]) else line[1]
                batch.append(_strip_line_end(record))
                batch_bytes += len(record)
                if len(batch) == self._lines_per_batch or batch_bytes >= BYTES_PER_BATCH:
                    yield file_name, batch
                    batch, batch_bytes = [], 0
            if batch:
                yield file_name, batch

    @staticmethod
    def _record(first: tuple[int, bytes], lines: "_Lines") -> bytes:
        """The CSV record starting with `first`: lines joined until the quotes balance."""
        taken = [first]
        size = len(first[1])
        balanced = False
        while size < MAX_RECORD_BYTES:
            line = lines.next()
            if line is None:
                break
            taken.append(line)
            size += len(line[1])
            if _open_quote(line[1]):
                balanced = True
                break
        if not balanced:
            lines.push_back(taken[1:])
            return first[1]
        return b"".join(text for _, text in taken)


class _Lines:
    """The lines of an open file with their start offsets, with room to push lines back."""

    def __init__(self, handle: BinaryIO, position: int):
        self._handle = handle
        self._position = position
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()

    def next(self) -> tuple[int, bytes] | None:
        if self._pending:
            return self._pending.popleft()
        line = self._handle.readline()
        if not line:
            return None
        start = self._position
        self._position += len(line)
        return start, line

    def push_back(self, lines: list[tuple[int, bytes]]) -> None:
        self._pending.extendleft(reversed(lines))


def _open_quote(line: bytes) -> bool:
    """Whether the line leaves a quoted field open (an odd number of double quotes; RFC 4180
    escapes a quote inside a quoted field by doubling it, which keeps the count even)."""
    return line.count(b'"') % 2 == 1


def _strip_line_end(record: bytes) -> bytes:
    return record[:-2] if record.endswith(b"\r\n") else record[:-1] if record.endswith(b"\n") else record


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
