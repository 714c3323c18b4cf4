"""Turn decoded frames and readings into the engine's columns, refusing unknown sensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sensors.schema import FastFrame, FastFrameReading, FastReading, Frame, FrameReading, Reading


@dataclass
class Batch:
    """Readings as columns: sensor row, event time (ms), value, quality good/uncertain.

    `origin[p]` and `slot[p]` say where reading p came from (the caller's message object, and
    its index in the frame's `readings`, or -1 for a single-reading message), so a reading
    refused later (e.g. `late`) can be dead-lettered with its source."""

    idx: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    good: np.ndarray
    origin: list = field(default_factory=list)
    slot: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.idx)


@dataclass
class Reject:
    """A reading the rules cannot use, with why; the worker dead-letters it."""

    reason: str
    detail: str
    payload: dict
    origin: object = None


class BatchBuilder:
    """Collects readings as columns; a sensor unknown to the registry or to its site is rejected."""

    def __init__(self, index: dict[str, int], sensor_site_ids: list[str]):
        self.index = index
        self.sensor_site_ids = sensor_site_ids
        self.idx: list[int] = []
        self.ts: list[int] = []
        self.value: list[float] = []
        self.good: list[bool] = []
        self.origin: list = []
        self.slot: list[int] = []
        self.rejects: list[Reject] = []

    def add(self, msg: Frame | Reading | FastFrame | FastReading, origin: object = None) -> None:
        """Add one decoded telemetry message (the pydantic models or their msgspec twins)."""
        framed = isinstance(msg, (Frame, FastFrame))
        readings: Sequence[FrameReading | Reading | FastFrameReading | FastReading]
        if isinstance(msg, (Frame, FastFrame)):
            readings = msg.readings
        else:
            readings = (msg,)
        site, ts, first_slot = msg.site_id, msg.ts, (0 if framed else -1)
        get = self.index.get
        owner = self.sensor_site_ids
        for k, r in enumerate(readings):
            i = get(r.sensor_id)
            if i is None or owner[i] != site:
                reason = "unknown_sensor" if i is None else "sensor_not_of_site"
                detail = (
                    f"sensor_id {r.sensor_id!r} is not in the registry"
                    if i is None
                    else f"sensor_id {r.sensor_id!r} belongs to site {owner[i]!r}, not {site!r}"
                )
                self.rejects.append(
                    Reject(
                        reason,
                        detail,
                        {"site_id": site, "ts": ts, "sensor_id": r.sensor_id, "value": r.value, "quality": r.quality},
                        origin,
                    )
                )
                continue
            self.idx.append(i)
            self.ts.append(ts)
            self.value.append(r.value)
            self.good.append(r.quality != "bad")
            self.origin.append(origin)
            self.slot.append(first_slot + k if first_slot >= 0 else -1)

    def build(self) -> Batch:
        """The collected readings as numpy columns."""
        return Batch(
            idx=np.asarray(self.idx, dtype=np.int64),
            ts=np.asarray(self.ts, dtype=np.int64),
            value=np.asarray(self.value, dtype=np.float64),
            good=np.asarray(self.good, dtype=bool),
            origin=self.origin,
            slot=self.slot,
        )


def concat(batches: Sequence[Batch]) -> Batch:
    """One batch of all readings, in the given order."""
    return Batch(
        idx=np.concatenate([b.idx for b in batches]).astype(np.int64),
        ts=np.concatenate([b.ts for b in batches]).astype(np.int64),
        value=np.concatenate([b.value for b in batches]).astype(np.float64),
        good=np.concatenate([b.good for b in batches]).astype(bool),
        origin=[o for b in batches for o in b.origin],
        slot=[s for b in batches for s in b.slot],
    )
