"""Beam I/O that moves batches instead of single records, so per-element overhead stays small.

One Beam element per CSV line or per tf.Example costs more than parsing the line or encoding the
example (measured in benchmarks/preprocess.py). These are ordinary Beam `FileBasedSource` and
`FileBasedSink` subclasses: splittable by byte offset, compressed by Beam, with Beam's temporary
files and atomic finalisation.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import io
import itertools
import queue
import struct
import threading
import zlib
from typing import BinaryIO, Iterator, NamedTuple

import google_crc32c
import numpy as np
from apache_beam.io import filebasedsink, filebasedsource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.range_trackers import OffsetRangeTracker

LINES_PER_BATCH = 131072
BYTES_PER_BATCH = 16 << 20
MAX_RECORD_BYTES = 4 << 20
BLOCK_BYTES = 4 << 20
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8   # TFRecord's CRC mask: rotate right by 15 bits, add this


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
    Files are read in blocks of BLOCK_BYTES; the lines of a block that needs no record assembly
    (no line with an odd number of quotes) are taken many at a time and claimed as one group
    (`_claim_run`): line by line, reading took about 2 us a line, a fifth of the whole job's time
    per row.
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
            lines = _Lines(handle, position, self._quoted_newlines)
            batch: list[bytes] = []
            batch_bytes = 0
            more = True
            while more:
                run = lines.simple_run(self._lines_per_batch - len(batch), BYTES_PER_BATCH - batch_bytes)
                if run is not None:
                    records, more = _claim_run(range_tracker, run)
                    batch += records
                    batch_bytes += run.size
                else:
                    line = lines.next()
                    if line is None or not range_tracker.try_claim(line[0]):
                        break
                    record = self._record(line, lines) if self._quoted_newlines and _open_quote(line[1]) else line[1]
                    batch.append(_strip_line_end(record))
                    batch_bytes += len(record)
                if len(batch) >= self._lines_per_batch or batch_bytes >= BYTES_PER_BATCH:
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


class _Run(NamedTuple):
    """Consecutive whole lines (their endings removed), each a record of its own.

    Attributes:
        records: the lines.
        first: the offset where the first starts.
        ends: the running total of the lines' lengths without their endings ("\\n" each).
        size: their bytes, endings included.
    """
    records: list[bytes]
    first: int
    ends: list[int]
    size: int

    def start(self, index: int) -> int:
        """The offset where record `index` starts."""
        return self.first + (self.ends[index - 1] if index else 0) + index


def _claim_run(tracker: OffsetRangeTracker, run: _Run) -> tuple[list[bytes], bool]:
    """The records of `run` that belong to the tracker's range, and whether reading goes on.

    The first record is claimed as a split point and the last one marked as the current position,
    so no split can fall inside the run any more; a split that came in between shows in the stop
    position, and the records starting at or past it are left to the other range.
    """
    if not tracker.try_claim(run.first):
        return [], False
    last = run.start(len(run.records) - 1)
    tracker.set_current_position(last)
    stop = tracker.stop_position()
    if last < stop:
        return run.records, True
    return run.records[:bisect.bisect_left(range(len(run.records)), stop, key=run.start)], False


class _Lines:
    """The lines of an open file from `position` on, read a block at a time, with their offsets.

    `next` gives one line with its ending, `push_back` returns lines to be given again, and
    `simple_run` gives many lines at once while none is pushed back and the block needs no CSV
    record assembly (`quoted_newlines` and a line with an odd number of quotes).
    """

    def __init__(self, handle: BinaryIO, position: int, quoted_newlines: bool):
        self._handle = handle
        self._quoted_newlines = quoted_newlines
        self._offset = position                  # where self._lines[self._index] starts
        self._lines: list[bytes] = []            # the current block's lines without their newline
        self._index = 0
        self._terminated = True                  # the block's last line ends with a newline
        self._simple = False
        self._crlf = False
        self._tail = b""                         # the bytes after the block's last newline
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()

    def _fill(self) -> bool:
        """Reads the next block of lines; False at the end of the file."""
        while True:
            data = self._handle.read(BLOCK_BYTES)
            if not data:
                if not self._tail:
                    return False
                self._set_block([self._tail], False, self._tail)
                self._tail = b""
                return True
            data = self._tail + data
            end = data.rfind(b"\n") + 1
            self._tail = data[end:]
            if end:
                self._set_block(data[:end - 1].split(b"\n"), True, data[:end])
                return True

    def _set_block(self, lines: list[bytes], terminated: bool, data: bytes) -> None:
        self._lines, self._index, self._terminated = lines, 0, terminated
        self._crlf = b"\r" in data
        self._simple = terminated and not (self._quoted_newlines and b'"' in data and _has_open_quote(data))

    def next(self) -> tuple[int, bytes] | None:
        if self._pending:
            return self._pending.popleft()
        if self._index >= len(self._lines) and not self._fill():
            return None
        line = self._lines[self._index]
        self._index += 1
        if self._terminated or self._index < len(self._lines):
            line += b"\n"
        start = self._offset
        self._offset += len(line)
        return start, line

    def push_back(self, lines: list[tuple[int, bytes]]) -> None:
        self._pending.extendleft(reversed(lines))

    def simple_run(self, count: int, size: int) -> _Run | None:
        """Up to `count` lines of at most `size` bytes (at least one line), or None when the next
        line must be read with `next`."""
        if self._pending or (self._index >= len(self._lines) and not self._fill()) or not self._simple:
            return None
        lines = self._lines[self._index:self._index + count]
        ends = list(itertools.accumulate(map(len, lines)))
        taken = max(1, bisect.bisect_right(range(len(lines)), size, key=lambda i: ends[i] + i + 1))
        del lines[taken:], ends[taken:]
        run = _Run([line[:-1] if line[-1:] == b"\r" else line for line in lines] if self._crlf else lines,
                   self._offset, ends, ends[-1] + taken)
        self._index += taken
        self._offset += run.size
        return run


def _has_open_quote(block: bytes) -> bool:
    """Whether a line of `block` (whole lines) has an odd number of double quotes: the parity of
    the quotes counted so far changes between two newlines. With numpy, 8.5 ms a 4 MiB block of the
    benchmark's CSV instead of 28 ms counting line by line (pyarrow's CSV writer quotes strings)."""
    codes = np.frombuffer(block, np.uint8)
    parity = np.bitwise_xor.accumulate((codes == ord('"')).view(np.uint8))
    at_line_ends = parity[codes == ord("\n")]
    return bool(at_line_ends[0] or np.any(at_line_ends[1:] != at_line_ends[:-1]))


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
                    record = read_frame(handle)
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


def read_frame(handle: BinaryIO) -> bytes | None:
    """The next record of a TFRecord stream, both its checksums checked; None at its end.

    Raises:
        ValueError: a checksum does not match.
    """
    header = handle.read(12)
    if not header:
        return None
    if len(header) < 12 or header[8:] != _masked_crc(header[:8]):
        raise ValueError("length checksum mismatch")
    length = _LENGTH.unpack(header[:8])[0]
    data, footer = handle.read(length), handle.read(4)
    if len(data) < length or footer != _masked_crc(data):
        raise ValueError("data checksum mismatch")
    return data


def _mask(crc: int) -> bytes:
    return _CRC.pack((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def _masked_crc(data: bytes) -> bytes:
    return _mask(google_crc32c.value(data))


def frame_header(size: int) -> bytes:
    """The 12 bytes before a record of `size` bytes: its length and the length's masked CRC32C."""
    length = _LENGTH.pack(size)
    return length + _masked_crc(length)


def masked_crcs(crcs: np.ndarray) -> np.ndarray:
    """TFRecord's mask of CRC32Cs [records] (uint32) -> [records] uint32."""
    return ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(_MASK_DELTA)


def frame_records(records: list[bytes]) -> bytes:
    """TFRecord framing of each record (length, masked CRC32C of length, data, masked CRC32C of data).

    A batch's records share few lengths, so each length's 12-byte header is made once; the data
    CRCs are masked with numpy and the parts joined without a Python loop: 0.32-0.36 -> 0.21 us a
    record (131,072 tf.Examples of the preprocess benchmark).
    """
    crcs = np.fromiter(map(google_crc32c.value, records), np.uint32, count=len(records))
    footers = masked_crcs(crcs).astype("<u4").view("V4").tolist()
    headers = {size: frame_header(size) for size in set(map(len, records))}
    return b"".join(itertools.chain.from_iterable(zip(map(headers.__getitem__, map(len, records)), records, footers)))


class TFRecordBatchSink(filebasedsink.FileBasedSink):
    """Writes chunks of TFRecord-framed records (`frame_records`) as TFRecord files (gzip when the
    suffix ends in .gz)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = ".tfrecord.gz"):
        super().__init__(file_path_prefix, coder=None, file_name_suffix=file_name_suffix,
                         mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO)

    def open(self, temp_path: str) -> BinaryIO:
        if not temp_path.endswith(".gz"):
            return super().open(temp_path)
        return GzipInThread(FileSystems.create(temp_path, self.mime_type, CompressionTypes.UNCOMPRESSED))

    def write_record(self, file_handle: BinaryIO, framed: bytes) -> None:
        file_handle.write(framed)


class GzipInThread(io.RawIOBase):
    """A write-only gzip stream, the bytes Beam's GZIP compression writes, compressed in a thread.

    zlib lets go of the GIL while it compresses, so the next batch is transformed, encoded and
    framed meanwhile: gzip at level 6 of the 79 MB of the 1M-row benchmark's training records took
    4.1 s. Writing them in 8 chunks, each after 0.4 s of Python work: 4.5-4.7 s inline, 3.0-3.4 s
    with this thread (when a core is free). At most two writes wait for it, so memory stays flat.
    """

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw = raw
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, name="gzip-in-thread", daemon=True)
        self._thread.start()

    def _compress(self) -> None:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        try:
            while (chunk := self._chunks.get()) is not None:
                self._raw.write(compressor.compress(chunk))
            self._raw.write(compressor.flush())
        except BaseException as error:  # raised again in the writing thread
            self._error = error
            while self._chunks.get() is not None:
                pass

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._chunks.put(bytes(data))
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self._chunks.put(None)
        self._thread.join()
        super().close()
        self._raw.close()
        if self._error is not None:
            raise self._error
