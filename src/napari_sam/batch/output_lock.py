"""Who holds an output folder: a batch run writing into it, or a person annotating its images as a series.

One lock file in the folder's records is held for as long as the run or the series is open, so a second run or
session on the same folder is refused at once, with a message saying who holds it. The lock is the operating
system's (``flock``): it goes with the process, so a killed session leaves none behind on a local disk. A lock that
outlives its holder (a network drive whose server lost track of it) can be broken on request.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

#: The folder of an output folder that holds its records (the images finished, the series, the lock).
RECORDS = ".napari-sam"
#: The lock file, in the records; it says who holds it (written once it is held).
LOCK = "run.lock"


class FolderInUse(ValueError):
    """The output folder is held by another run or session."""


def _holder(records: Path) -> str:
    """Who holds the lock, in words, from the lock file ("" when unknown)."""
    try:
        holder = json.loads((records / LOCK).read_text())
        return (f" ({holder['what']}, process {holder['pid']} on {holder['host']}, since "
                f"{holder['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


class OutputLock:
    """Holds the output folder ``out`` for ``what`` ("a batch run", "an annotation session") until :meth:`release`.

    Args:
        out: the output folder (its records folder is made).
        what: who holds it, in words, for the message another one gets.
        break_lock: take the folder even though another holder has it (its lock is removed first): for a stale lock
            whose holder is gone.

    Raises:
        FolderInUse: another run or session holds the folder; the message names it and the way out.
    """

    def __init__(self, out: Path, what: str, break_lock: bool = False):
        self.records = Path(out) / RECORDS
        self.records.mkdir(parents=True, exist_ok=True)
        if break_lock:
            with contextlib.suppress(OSError):
                os.unlink(self.records / LOCK)
        self._lock = FileLock(self.records / LOCK)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise FolderInUse(
                f"{out} is in use by another napari-sam run or annotation session{_holder(self.records)}: close it "
                "there, or choose another output folder. If that session is gone and its lock stayed (a network "
                "drive), take the folder with --break-lock (break_lock=True in Python).") from None
        with open(self.records / LOCK, "w", encoding="utf-8") as handle:  # the file exists: the folder is unchanged
            json.dump({"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                       "since": datetime.now(UTC).isoformat(timespec="seconds")}, handle)

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
