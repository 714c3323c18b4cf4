"""A durable local spool for InfluxDB writes that could not be made (InfluxDB down or slow).

Each chunk of line protocol InfluxDB did not take is written to its own file (fsync'd, then
renamed into place), and sent again oldest first when InfluxDB answers. The worker acknowledges a
batch once its points are in InfluxDB *or* here, so an outage loses nothing; when the spool
reaches its size limit the worker waits for it to drain instead of consuming more.
Several workers may share one spool directory: points are idempotent (same series and time),
so a chunk two workers happen to send twice changes nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from pathlib import Path

_counter = itertools.count()


class Spool:
    """Chunks of line protocol on disk, oldest first."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)

    def append(self, body: bytes) -> None:
        """Keep one chunk durably (it survives a SIGKILL once this returns)."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):08d}"
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self.directory / f"{name}.lp")

    def segments(self) -> list[Path]:
        """Spooled chunks, oldest first."""
        return sorted(self.directory.glob("*.lp"))

    def holding(self) -> bool:
        """Is any chunk spooled? Asked before every write, so one directory read, unsorted."""
        with os.scandir(self.directory) as entries:
            return any(e.name.endswith(".lp") for e in entries)

    def size(self) -> int:
        """Bytes spooled."""
        total = 0
        for p in self.segments():
            with contextlib.suppress(FileNotFoundError):  # another worker drained it meanwhile
                total += p.stat().st_size
        return total

    def full(self) -> bool:
        """At or over the size limit."""
        return self.size() >= self.max_bytes

    @staticmethod
    def read(segment: Path) -> bytes | None:
        """A chunk's bytes, or None if another worker already sent and removed it."""
        try:
            return segment.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def done(segment: Path) -> None:
        """The chunk is in InfluxDB: forget it."""
        segment.unlink(missing_ok=True)
