"""Reorder buffer: each site's readings wait until the site's event-time watermark passes them,
then go to the engine sorted by event time, as `safewatch replay` feeds a file.

Pure event-time logic: the caller says how far each site's watermark has come (the worker: the
newest event time seen at the site less the hold, run on by wall time while the site is quiet)
and which offset each reading came from, so it can commit only what was handed out.
"""

from __future__ import annotations

import numpy as np

from .batch import Batch
from .engine import NEVER, _previous

_EMPTY_I = np.empty(0, dtype=np.int64)


class ReorderBuffer:
    """Held readings as columns, with their site's watermark; `release` hands out what it passed."""

    def __init__(self, sensor_site: np.ndarray, n_sites: int, lateness_ms: int):
        self.sensor_site = sensor_site
        self.lateness_ms = lateness_ms
        self.seen = np.full(len(sensor_site), NEVER, dtype=np.int64)  # newest event time held or handed out
        self.site_seen = np.full(n_sites, NEVER, dtype=np.int64)
        # Per site: every reading at or before it has been handed out (or refused); it never goes back.
        self.released_to = np.full(n_sites, NEVER, dtype=np.int64)
        self.idx, self.ts, self.value = _EMPTY_I, _EMPTY_I, np.empty(0)
        self.good, self.slot, self.offset = np.empty(0, dtype=bool), _EMPTY_I, _EMPTY_I
        self.origin = np.empty(0, dtype=object)  # object columns index in C: no Python loop per held reading

    def __len__(self) -> int:
        return len(self.idx)

    def push(self, batch: Batch, offsets: np.ndarray, newest: np.ndarray) -> np.ndarray:
        """Hold a batch's readings; returns the positions refused as late (more than the lateness behind
        their sensor's newest reading, evaluated (`newest`) or held), which are not held."""
        if not len(batch):
            return _EMPTY_I
        # The same rule as the engine's, against what arrived: holding must not change what is late.
        prev, _, _ = _previous(batch.idx, batch.ts, np.maximum(newest, self.seen))
        late = batch.ts < prev - self.lateness_ms
        keep = np.flatnonzero(~late)
        idx, ts = batch.idx[keep], batch.ts[keep]
        np.maximum.at(self.seen, idx, ts)
        np.maximum.at(self.site_seen, self.sensor_site[idx], ts)
        origin = np.fromiter(batch.origin or [None] * len(batch), dtype=object, count=len(batch))
        self.idx = np.concatenate([self.idx, idx])
        self.ts = np.concatenate([self.ts, ts])
        self.value = np.concatenate([self.value, batch.value[keep]])
        self.good = np.concatenate([self.good, batch.good[keep]])
        self.slot = np.concatenate([self.slot, np.asarray(batch.slot or [-1] * len(batch), dtype=np.int64)[keep]])
        self.offset = np.concatenate([self.offset, np.asarray(offsets, dtype=np.int64)[keep]])
        self.origin = np.concatenate([self.origin, origin[keep]])
        return np.flatnonzero(late)

    def release(self, upto: np.ndarray) -> Batch:
        """Raise each site's watermark to `upto` (never lower it) and hand out every held reading at or
        before its site's watermark, in event-time order (stable: equal times keep arrival order)."""
        np.maximum(self.released_to, upto, out=self.released_to)
        due = self.ts <= self.released_to[self.sensor_site[self.idx]]
        if not due.any():
            return Batch(_EMPTY_I, _EMPTY_I, np.empty(0), np.empty(0, dtype=bool))
        pos = np.flatnonzero(due)
        pos = pos[np.argsort(self.ts[pos], kind="stable")]
        out = Batch(
            idx=self.idx[pos],
            ts=self.ts[pos],
            value=self.value[pos],
            good=self.good[pos],
            origin=self.origin[pos].tolist(),
            slot=self.slot[pos].tolist(),
        )
        self._keep(~due)
        return out

    def held_from(self, sites: list[int] | np.ndarray) -> int | None:
        """The smallest offset a reading of these site rows is held from (None: nothing held)."""
        if not len(self.idx):
            return None
        mine = np.isin(self.sensor_site[self.idx], sites)
        return int(self.offset[mine].min()) if mine.any() else None

    def forget(self, sites: list[int]) -> None:
        """Drop these sites' held readings and marks (another worker reads them now, or a restore follows)."""
        sensors = np.isin(self.sensor_site, sites)
        self.seen[sensors] = NEVER
        self.site_seen[sites] = NEVER
        self.released_to[sites] = NEVER
        self._keep(~np.isin(self.sensor_site[self.idx], sites))

    def _keep(self, mask: np.ndarray) -> None:
        for name in ("idx", "ts", "value", "good", "slot", "offset", "origin"):
            setattr(self, name, getattr(self, name)[mask])
