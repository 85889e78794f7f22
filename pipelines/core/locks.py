"""A lock file with an owner and a heartbeat, so that a dead owner's lock can be told from a live one.

The lock is a small JSON file {pid, host, command, started_at, heartbeat_at, token}, created
exclusively (O_EXCL on local and POSIX filesystems; write-then-verify on object stores, see
`fs.create_exclusive`). While held, a daemon thread rewrites `heartbeat_at` every
HEARTBEAT_SECONDS. A lock is stale when its owner is gone: on this host its pid no longer runs;
on another host its heartbeat is older than STALE_SECONDS. A stale lock is taken over by renaming
it aside first (only one contender's rename succeeds), then creating a new one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import threading
import time
from typing import Any

from pipelines.core import fs
from pipelines.core.errors import UsageError

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0


class LockedError(UsageError):
    """Another live process holds the lock."""


@dataclasses.dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    command: str
    started_at: float
    heartbeat_at: float
    token: str

    @classmethod
    def parse(cls, text: str) -> "LockOwner | None":
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data.get("command", "")),
                       float(data["started_at"]), float(data["heartbeat_at"]), str(data["token"]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def is_alive(self, now: float | None = None) -> bool:
        """Whether the owner still runs: its pid on this host, its heartbeat elsewhere."""
        now = time.time() if now is None else now
        if self.host == socket.gethostname():
            return _pid_running(self.pid) and now - self.heartbeat_at < STALE_SECONDS * 10
        return now - self.heartbeat_at < STALE_SECONDS

    def describe(self, now: float | None = None) -> str:
        age = (time.time() if now is None else now) - self.heartbeat_at
        return f"pid {self.pid} on {self.host} ({self.command or 'embedpipe'}; heartbeat {age:.0f} s ago)"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def read_owner(path: str) -> LockOwner | None:
    """The lock's owner, or None when there is no lock (or an unreadable one)."""
    try:
        return LockOwner.parse(fs.read_text(path))
    except (OSError, UnicodeDecodeError):
        return None


class FileLock:
    """An exclusive lock at `path`; `what` names the locked thing in errors ("run 2026...").

    Use as a context manager, or `acquire()` / `release()`. Not re-entrant: take it once per command.
    """

    def __init__(self, path: str, what: str, command: str = "", heartbeat: bool = True):
        self.path = path
        self._what = what
        self._command = command
        self._heartbeat = heartbeat
        self._owner: LockOwner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Raises:
            LockedError: a live process holds it.
        """
        now = time.time()
        owner = LockOwner(os.getpid(), socket.gethostname(), self._command, now, now, secrets.token_hex(8))
        fs.makedirs(fs.dirname(self.path))
        for _ in range(3):
            if fs.create_exclusive(self.path, owner.to_json()):
                self._owner = owner
                if self._heartbeat:
                    self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
                    self._thread.start()
                return
            current = read_owner(self.path)
            if current is not None and current.is_alive():
                raise LockedError(f"{self._what} is in use by {current.describe()}; wait for it, or give "
                                  "another run id")
            self._take_over_stale()
        raise LockedError(f"{self._what}: could not take the lock at {self.path}; another process keeps taking it")

    def _take_over_stale(self) -> None:
        """Renames a dead owner's lock aside: of several processes doing so at once, one rename wins."""
        aside = f"{self.path}.stale-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            fs.rename(self.path, aside)
        except OSError:
            return  # another contender moved it first
        fs.remove(aside)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            current = read_owner(self.path)
            if current is None or current.token != self._owner.token:
                return  # taken over (we were judged dead); never overwrite the new owner's lock
            self._owner = dataclasses.replace(self._owner, heartbeat_at=time.time())
            try:
                fs.write_text_atomic(self.path, self._owner.to_json())
            except OSError:
                pass  # the next beat tries again

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = read_owner(self.path)
        if self._owner is not None and current is not None and current.token == self._owner.token:
            fs.remove(self.path)
        self._owner = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
