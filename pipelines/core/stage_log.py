"""A stage's full log in `<run>/logs/<stage>.log`: Python logging and everything native code prints.

While a `StageLog` is open, every logging record (of every library) is appended to the stage's log
file, and the process's stderr file descriptor (2) points at that file too, so what TensorFlow's
C++ code, absl, gRPC and Beam's worker processes print goes there as well, not to the terminal.
The terminal keeps its own descriptor (`terminal_stream`). On a remote run directory the log is
written locally and copied into the run when the stage ends (appended to what earlier attempts
left there).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import IO, Any

from pipelines.core import fs
from pipelines.core.rundir import RunDir

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def stderr_is_descriptor() -> bool:
    """Whether sys.stderr writes to the process's descriptor 2 (not a test's capture buffer)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def terminal_stream() -> IO[str]:
    """A stream to the terminal that survives redirecting descriptor 2 (a duplicate of it), or
    sys.stderr when it is not a real descriptor (under a test's capture)."""
    if not stderr_is_descriptor():
        return sys.stderr
    return os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")


class StageLog:
    """Sends all logging and native stderr of a stage into its log file while open.

    Args:
        run: the run directory (local or remote).
        stage: the stage name (the file is `logs/<stage>.log`).
        level: the lowest logging level written to the file.
        capture_native: also send descriptor 2 (native output) into the file.
    """

    def __init__(self, run: RunDir, stage: str, level: int = logging.INFO, capture_native: bool = True):
        self.path = run.log_path(stage)
        self._level = level
        self._capture_native = capture_native
        self._local: str | None = None
        self._file: IO[str] | None = None
        self._handler: logging.Handler | None = None
        self._saved_stderr: int | None = None

    def __enter__(self) -> "StageLog":
        if fs.is_remote(self.path):
            descriptor, self._local = tempfile.mkstemp(prefix="embedpipe-", suffix=".log")
            os.close(descriptor)
        else:
            self._local = self.path
            fs.makedirs(fs.dirname(self.path))
        self._file = open(self._local, "a", buffering=1, encoding="utf-8", errors="replace")
        self._handler = logging.StreamHandler(self._file)
        self._handler.setLevel(self._level)
        self._handler.setFormatter(logging.Formatter(FILE_FORMAT))
        root = logging.getLogger()
        root.addHandler(self._handler)
        root.setLevel(min(root.level or logging.WARNING, self._level))
        if self._capture_native and stderr_is_descriptor():
            sys.stderr.flush()
            self._saved_stderr = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved_stderr is not None:
            sys.stderr.flush()
            os.dup2(self._saved_stderr, 2)
            os.close(self._saved_stderr)
            self._saved_stderr = None
        logging.getLogger().removeHandler(self._handler)
        self._file.close()
        if self._local != self.path:
            previous = fs.read_bytes(self.path) if fs.exists(self.path) else b""
            with open(self._local, "rb") as handle:
                fs.write_bytes(self.path, previous + handle.read())
            os.remove(self._local)
