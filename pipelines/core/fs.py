"""One filesystem layer: every read, write, listing, rename and delete outside Beam transforms.

- Local paths use the standard library: fast, and no heavy import, so read-only commands start in
  about a second.
- A scheme Beam knows (gs://, s3://, azfs://, hdfs:// with Beam's extras installed) goes through
  Beam's `FileSystems`, the code the Beam stages read and write with.
- Any other scheme goes through TensorFlow's `tf.io.gfile` (ram://, and what TensorFlow plugins
  add), which the trainer's `tf.data` reads through as well.

Beam and TensorFlow are imported only when such a path is used. pyarrow reads and writes through
the file objects `open` returns, so Parquet works on every backend. On object stores a directory
rename is a copy and a delete, not atomic: readers trust `manifest.json`, never the presence of a
directory (see the run-directory protocol in README.md).
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import glob as local_glob
import io
import os
import posixpath
import secrets
import shutil
import tempfile
from typing import IO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def is_remote(path: str) -> bool:
    """True for a path with a scheme other than file://."""
    scheme, separator, _ = path.partition("://")
    return bool(separator) and scheme != "file"


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(path: str, *parts: str) -> str:
    return posixpath.join(path, *parts) if is_remote(path) else os.path.join(path, *parts)


def dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path.rstrip("/"))


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


class _LocalBackend:
    """The standard library."""

    def exists(self, path: str) -> bool:
        return os.path.exists(_local(path))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(_local(path))

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(_local(path)))

    def glob(self, pattern: str) -> list[str]:
        return sorted(local_glob.glob(_local(pattern)))

    def size(self, path: str) -> int:
        return os.path.getsize(_local(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(_local(path) or ".", exist_ok=True)   # "": the directory of a bare file name

    def remove(self, path: str) -> None:
        path = _local(path)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)

    def rename(self, source: str, target: str, overwrite: bool) -> None:
        (os.replace if overwrite else os.rename)(_local(source), _local(target))

    def open(self, path: str, mode: str) -> IO:
        return builtins.open(_local(path), mode, **({} if "b" in mode else {"encoding": "utf-8"}))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        try:
            descriptor = os.open(_local(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True


class _GFileBackend:
    """TensorFlow's `tf.io.gfile` (ram://, and schemes TensorFlow plugins register)."""

    def __init__(self):
        import tensorflow as tf
        self._gfile = tf.io.gfile
        self._not_found = tf.errors.NotFoundError

    def exists(self, path: str) -> bool:
        return self._gfile.exists(path)

    def isdir(self, path: str) -> bool:
        return self._gfile.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(name.rstrip("/") for name in self._gfile.listdir(path))

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._gfile.glob(pattern))

    def size(self, path: str) -> int:
        return self._gfile.stat(path).length

    def makedirs(self, path: str) -> None:
        self._gfile.makedirs(path)

    def remove(self, path: str) -> None:
        try:
            self._gfile.rmtree(path) if self._gfile.isdir(path) else self._gfile.remove(path)
        except self._not_found:
            pass

    def rename(self, source: str, target: str, overwrite: bool) -> None:
        if self._gfile.isdir(source):
            _copy_then_delete(self, source, target, overwrite)
        else:
            self._gfile.rename(source, target, overwrite=overwrite)

    def open(self, path: str, mode: str) -> IO:
        if "r" in mode and not self._gfile.exists(path):  # GFile opens lazily; fail now, as open() does
            raise FileNotFoundError(2, "No such file", path)
        return self._gfile.GFile(path, mode)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        return _create_then_verify(self, path, data)


class _BeamBackend:
    """Beam's `FileSystems` (gs://, s3://, azfs://, hdfs://)."""

    def __init__(self):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
        self._fs = FileSystems
        self._uncompressed = CompressionTypes.UNCOMPRESSED

    def exists(self, path: str) -> bool:
        return self._fs.exists(path) or self.isdir(path)

    def isdir(self, path: str) -> bool:
        # Object stores have no directories: a directory is a prefix that files sit under.
        return bool(self._match(path.rstrip("/") + "/**"))

    def _match(self, pattern: str) -> list[str]:
        return sorted(m.path for m in self._fs.match([pattern])[0].metadata_list)

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({found[len(prefix):].split("/")[0] for found in self._match(prefix + "**")})

    def glob(self, pattern: str) -> list[str]:
        return self._match(pattern)

    def size(self, path: str) -> int:
        return self._fs.match([path])[0].metadata_list[0].size_in_bytes

    def makedirs(self, path: str) -> None:
        try:
            self._fs.mkdirs(path)
        except OSError:
            pass  # exists already (object stores have no directories to make)

    def remove(self, path: str) -> None:
        files = self._match(path.rstrip("/") + "/**")
        if files:
            self._fs.delete(files)
        elif self._fs.exists(path):
            self._fs.delete([path])

    def rename(self, source: str, target: str, overwrite: bool) -> None:
        if self.isdir(source):
            _copy_then_delete(self, source, target, overwrite)
            return
        if overwrite and self._fs.exists(target):
            self._fs.delete([target])
        self._fs.rename([source], [target])

    def open(self, path: str, mode: str) -> IO:
        binary = (self._fs.create(path, compression_type=self._uncompressed) if "w" in mode
                  else self._fs.open(path, compression_type=self._uncompressed))
        return binary if "b" in mode else io.TextIOWrapper(binary, encoding="utf-8")

    def create_exclusive(self, path: str, data: bytes) -> bool:
        return _create_then_verify(self, path, data)


def _copy_then_delete(backend, source: str, target: str, overwrite: bool) -> None:
    """A directory rename where the store has none: copy every file, then delete the source."""
    if backend.exists(target):
        if not overwrite:
            raise FileExistsError(f"{target} exists")
        backend.remove(target)
    for path in walk_files(source):
        destination = join(target, path[len(source.rstrip("/")) + 1:])
        backend.makedirs(dirname(destination))
        with backend.open(path, "rb") as reader, backend.open(destination, "wb") as writer:
            shutil.copyfileobj(reader, writer)
    backend.remove(source)


def _create_then_verify(backend, path: str, data: bytes) -> bool:
    """Exclusive creation where the store cannot do it atomically: write a unique token, read it back.

    Two writers racing in the same instant can both read back their own token on a store without
    read-after-write consistency; README says so (one scheduler per output on object stores).
    """
    if backend.exists(path):
        return False
    with backend.open(path, "wb") as handle:
        handle.write(data)
    with backend.open(path, "rb") as handle:
        return handle.read() == data


@functools.lru_cache(maxsize=None)
def _make_backend(kind: str):
    return {"local": _LocalBackend, "gfile": _GFileBackend, "beam": _BeamBackend}[kind]()


def _backend(path: str):
    """The backend of `path` (made on first use: the remote ones import Beam or TensorFlow)."""
    if not is_remote(path):
        return _make_backend("local")
    try:
        from apache_beam.io.filesystems import FileSystems
        FileSystems.get_filesystem(path)
    except ValueError:
        return _make_backend("gfile")  # a scheme Beam does not know, such as ram://
    except Exception as error:  # Beam knows the scheme but misses its extra (BeamIOError)
        raise OSError(f"{path}: {error}") from None
    return _make_backend("beam")


def exists(path: str) -> bool:
    return _backend(path).exists(path)


def isdir(path: str) -> bool:
    return _backend(path).isdir(path)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory, sorted; [] when it does not exist."""
    backend = _backend(path)
    return backend.listdir(path) if backend.isdir(path) else []


def glob(pattern: str) -> list[str]:
    """Paths matching a glob pattern, sorted."""
    return _backend(pattern).glob(pattern)


def size(path: str) -> int:
    """A file's size in bytes."""
    return _backend(path).size(path)


def makedirs(path: str) -> None:
    _backend(path).makedirs(path)


def remove(path: str) -> None:
    """Deletes a file or a whole directory; nothing happens when it does not exist."""
    _backend(path).remove(path)


def rename(source: str, target: str, overwrite: bool = False) -> None:
    """Moves a file or directory; `target` must not exist unless `overwrite` (files only)."""
    _backend(source).rename(source, target, overwrite)


def open(path: str, mode: str = "rb") -> IO:  # noqa: A001 - the layer's own open
    """A file object: "rb", "wb", "r" or "w" (text is UTF-8)."""
    return _backend(path).open(path, mode)


def read_text(path: str) -> str:
    with open(path, "r") as handle:
        return handle.read()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def read_range(path: str, start: int, length: int) -> bytes:
    """`length` bytes of `path` from byte `start` (a seek, then a read).

    Raises:
        OSError: the file ends before them.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(length)
    if len(data) != length:
        raise OSError(f"{path}: {len(data)} of {length} bytes at byte {start}: the file is shorter than expected")
    return data


def write_bytes(path: str, data: bytes) -> None:
    makedirs(dirname(path))
    with open(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str, text: str) -> None:
    """Writes through a temporary sibling and a rename: readers see the old file or the new one.

    Raises:
        OSError: naming `path` (not the temporary file); the temporary file is removed.
    """
    temporary = join(dirname(path), f".{basename(path)}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        write_bytes(temporary, text.encode("utf-8"))
        rename(temporary, path, overwrite=True)
    except Exception as error:
        with contextlib.suppress(Exception):
            remove(temporary)
        raise OSError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}") from None


def create_exclusive(path: str, text: str) -> bool:
    """Creates `path` holding `text` only if it does not exist; False when it did."""
    return _backend(path).create_exclusive(path, text.encode("utf-8"))


def walk_files(path: str) -> list[str]:
    """Every file under a directory (recursively), sorted."""
    backend = _backend(path)
    files = []
    for name in backend.listdir(path):
        child = join(path, name)
        files.extend(walk_files(child) if backend.isdir(child) else [child])
    return sorted(files)


def copy_tree(source: str, target: str) -> None:
    """Copies a file or a directory's files to `target`, possibly across backends."""
    sources = walk_files(source) if isdir(source) else [source]
    for path in sources:
        relative = path[len(source.rstrip("/")) + 1:] if path != source else ""
        destination = join(target, relative) if relative else target
        makedirs(dirname(destination))
        with open(path, "rb") as reader, open(destination, "wb") as writer:
            shutil.copyfileobj(reader, writer)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding `path`'s content (the path itself when it is local), for libraries
    that only read local files (a memory-mapped index)."""
    if not is_remote(path):
        yield _local(path)
        return
    with tempfile.TemporaryDirectory(prefix="embedpipe-") as scratch:
        local = os.path.join(scratch, basename(path))
        copy_tree(path, local)
        yield local


@contextlib.contextmanager
def local_target(path: str) -> Iterator[str]:
    """A local path to write into; its content is copied to `path` when the block succeeds."""
    if not is_remote(path):
        makedirs(dirname(_local(path)))
        yield _local(path)
        return
    with tempfile.TemporaryDirectory(prefix="embedpipe-") as scratch:
        local = os.path.join(scratch, basename(path))
        yield local
        copy_tree(local, path)


def parquet_files(path: str) -> list[str]:
    """A Parquet file, or the `*.parquet` files of a directory, sorted."""
    return glob(join(path, "*.parquet")) if isdir(path) else [path]


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file or a directory of them as one table (the first file's schema metadata kept).

    Raises:
        FileNotFoundError: no Parquet file is there.
    """
    files = parquet_files(path)
    if not files or not exists(files[0]):
        raise FileNotFoundError(f"{path}: no Parquet file")
    tables = []
    for file in files:
        if is_remote(file):
            with open(file, "rb") as handle:
                tables.append(pq.read_table(pa.BufferReader(handle.read()), columns=columns))
        else:
            tables.append(pq.read_table(_local(file), columns=columns))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def read_parquet_schema(path: str) -> pa.Schema:
    """The schema (with key-value metadata) of a Parquet file or of a directory's first file."""
    files = parquet_files(path)
    if not files or not exists(files[0]):
        raise FileNotFoundError(f"{path}: no Parquet file")
    with open(files[0], "rb") as handle:
        return pq.read_schema(pa.BufferReader(handle.read()) if is_remote(files[0]) else handle)


def write_parquet(table: pa.Table, path: str, **options) -> None:
    """Writes one Parquet file through a temporary sibling, so it appears complete or not at all."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, **options)
    temporary = join(dirname(path), f".{basename(path)}.tmp-{os.getpid()}")
    write_bytes(temporary, buffer.getvalue().to_pybytes())
    rename(temporary, path, overwrite=True)
