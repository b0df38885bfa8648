"""One writer per output: an exclusive lock on the folder (or file) a command writes.

    with output_lock(run_folder):        # RUN/.gen-lock, created exclusively
        ...                              # check emptiness, write, all under the lock

The lock is a file created with O_CREAT | O_EXCL holding the owner's pid, host and start
time, removed when the block ends. A second command on the same output is refused with
one line naming the owner. A lock left by a process that died (kill -9, a crash) on this
host is stale: its pid is no longer running, so it is taken over. For a file output
(`gen score stats --out FILE.npz`) the lock is `.FILE.npz.gen-lock` beside it.

Used by `gen train`, `gen data`, `gen eval` and `gen score stats`. Checks such as "is
--out empty" must run inside the block (and ignore LOCK_NAME), or two commands started
together could both pass them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from gen.errors import GenError

LOCK_NAME = ".gen-lock"


def lock_path(output: Path, beside: bool = False) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}{LOCK_NAME}" if beside else output / LOCK_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _owner(path: Path) -> dict | None:
    """The lock's record, or None when it cannot be read (being written, or garbage)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _stale(path: Path, record: dict | None) -> bool:
    if record is None:  # unreadable: stale only once it is clearly not being written
        try:
            return time.time() - path.stat().st_mtime > 10
        except FileNotFoundError:
            return True
    same_host = record.get("host") == socket.gethostname()
    return same_host and isinstance(record.get("pid"), int) and not _alive(record["pid"])


@contextmanager
def output_lock(output, beside: bool = False, what: str = "--out"):
    """Hold the lock on `output` for the block (the folder is created if missing)."""
    output = Path(output)
    path = lock_path(output, beside)
    if not beside:
        output.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if _stale(path, owner):
                path.unlink(missing_ok=True)
                continue
            who = (f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}" if owner
                   else "another process")
            raise GenError(f"{what} {output} is in use by another gen command ({who}); wait for it to finish or "
                           f"choose another path (a lock left by a crash on another host: delete {path})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        break
    else:
        raise GenError(f"{what} {output}: could not take the lock {path}; try again")
    try:
        yield path
    finally:
        if _owner(path) == record:
            path.unlink(missing_ok=True)
