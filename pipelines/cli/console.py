"""What the terminal shows: a few clean lines per stage, and nothing of the libraries' chatter.

Without `-v` the terminal gets only the `embedpipe.*` loggers' records (stage progress, epoch lines,
warnings that matter) and the lines the commands write; every record of every library, and what
native code prints, goes to the stage's log file (`core.stage_log`). With `-v` every record
also reaches the terminal, with time and logger name.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import IO, Iterator

from pipelines.core.rundir import RunDir
from pipelines.core.stage_log import FILE_FORMAT, StageLog

logger = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 30.0
STAGE_WIDTH = 10
# Loggers whose INFO records are per-call chatter even in a verbose terminal.
CHATTY = ("absl", "apache_beam.typehints.native_type_compatibility")


class _ProgressFilter(logging.Filter):
    """Only embedpipe's own records, at INFO and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "embedpipe" or record.name.startswith("embedpipe.")


class _ProgressFormatter(logging.Formatter):
    """`<stage>     <message>` for embedpipe.<stage> loggers, "warning: " before warnings."""

    def format(self, record: logging.LogRecord) -> str:
        stage = record.name.split(".", 1)[1] if "." in record.name else ""
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        return f"{stage:<{STAGE_WIDTH}} {message}" if stage else message


class Console:
    """The terminal of one command.

    Args:
        stream: where lines go (a duplicate of the terminal's stderr, see `terminal_stream`).
        verbose: show every library's logging too.
    """

    def __init__(self, stream: IO[str], verbose: bool = False):
        self._stream = stream
        self.verbose = verbose
        self._lock = threading.Lock()
        self._last_line = time.time()
        self._handler: logging.Handler | None = None
        self.stage_name: str | None = None
        self.log_path: str | None = None
        self.resume_hint: str | None = None

    def configure_logging(self) -> None:
        """Routes logging records to the terminal (embedpipe's only, unless verbose)."""
        root = logging.getLogger()
        handler = logging.StreamHandler(_Writer(self))
        if self.verbose:
            handler.setFormatter(logging.Formatter(FILE_FORMAT))
            handler.setLevel(logging.INFO)
        else:
            handler.addFilter(_ProgressFilter())
            handler.setFormatter(_ProgressFormatter())
            handler.setLevel(logging.INFO)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.captureWarnings(True)  # Python warnings become records: in the log file, not the terminal
        self._handler = handler

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            logging.captureWarnings(False)
            self._handler = None

    def line(self, text: str = "") -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._last_line = time.time()

    def stage_line(self, stage: str, text: str) -> None:
        self.line(f"{stage:<{STAGE_WIDTH}} {text}")

    @contextlib.contextmanager
    def stage(self, run: RunDir, stage: str, started_text: str) -> Iterator[None]:
        """A stage's span: its log file open, a start line, and a "still running" line whenever the
        terminal has been quiet for HEARTBEAT_SECONDS."""
        self.stage_name, self.log_path = stage, run.log_path(stage)
        self.stage_line(stage, started_text)
        started = time.time()
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(1.0):
                if time.time() - self._last_line >= HEARTBEAT_SECONDS:
                    self.stage_line(stage, f"still running ({_duration(time.time() - started)} so far)")
        thread = threading.Thread(target=heartbeat, name=f"heartbeat {stage}", daemon=True)
        with StageLog(run, stage, logging.DEBUG if self.verbose else logging.INFO):
            thread.start()
            try:
                yield
            except KeyboardInterrupt:
                logger.error("%s interrupted", stage)
                raise
            except Exception:
                logger.error("%s failed", stage, exc_info=True)  # the traceback, in the stage's log
                raise
            finally:
                stop.set()
                thread.join()
        self.stage_name = None


class _Writer:
    """A file-like object logging's StreamHandler writes to, going through the console's lock."""

    def __init__(self, console: Console):
        self._console = console

    def write(self, text: str) -> None:
        if text.strip():
            self._console.line(text.rstrip("\n"))

    def flush(self) -> None:
        pass


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
