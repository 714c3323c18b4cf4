"""Threshold rules with a deadband, evaluated on a whole batch of readings at once.

Each sensor has two tracks, high (H=1, HH=2) and low (L=1, LL=2); a track's state is the
highest level currently open. A level opens when the value reaches its set point and
stays open until the value is back inside the deadband (set point ∓ deadband), so a value
hovering at a set point opens one hazard, not many.

numpy decides, for the whole batch, which readings can change anything; only those (a
sensor near or past a set point) are walked one by one. Normal readings cost a few vector
operations each, which keeps evaluation O(1) amortised per reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIGH_KINDS = ("high", "high_high")
LOW_KINDS = ("low", "low_low")


@dataclass
class SetPointTable:
    """Set points of every sensor as columns; row i is sensor i of the registry."""

    high_open: np.ndarray  # (n, 2): H, HH set points; +inf where the sensor has none
    high_hold: np.ndarray  # (n, 2): clear thresholds; a level stays open while value > hold
    low_open: np.ndarray  # (n, 2): L, LL; -inf where none
    low_hold: np.ndarray  # (n, 2): a level stays open while value < hold


def build_setpoints(alarms: list[tuple[float | None, float | None, float | None, float | None]],
                    deadbands: list[float]) -> SetPointTable:
    """Columns from per-sensor (high, high_high, low, low_low) set points and deadbands."""
    n = len(alarms)
    raw = np.array([[np.nan if x is None else x for x in a] for a in alarms], dtype=np.float64).reshape(n, 4)
    db = np.asarray(deadbands, dtype=np.float64).reshape(n, 1)
    high = raw[:, 0:2]
    low = raw[:, 2:4]
    return SetPointTable(
        high_open=np.where(np.isnan(high), np.inf, high),
        high_hold=np.where(np.isnan(high), np.inf, high - db),
        low_open=np.where(np.isnan(low), -np.inf, low),
        low_hold=np.where(np.isnan(low), -np.inf, low + db),
    )


@dataclass
class LevelColumns:
    """Per-reading level the value reaches (`open`) and may keep (`hold`), per track."""

    high_open: np.ndarray
    high_hold: np.ndarray
    low_open: np.ndarray
    low_hold: np.ndarray


def levels(table: SetPointTable, idx: np.ndarray, values: np.ndarray) -> LevelColumns:
    """For each reading, the level each track would open at and the level it may hold."""
    v = values
    ho = table.high_open[idx]
    hh = table.high_hold[idx]
    lo = table.low_open[idx]
    lh = table.low_hold[idx]
    # Levels are named by set point, not counted: a sensor with only HH opens level 2.
    return LevelColumns(
        high_open=np.maximum((v >= ho[:, 0]) * 1, (v >= ho[:, 1]) * 2).astype(np.int8),
        high_hold=np.maximum((v > hh[:, 0]) * 1, (v > hh[:, 1]) * 2).astype(np.int8),
        low_open=np.maximum((v <= lo[:, 0]) * 1, (v <= lo[:, 1]) * 2).astype(np.int8),
        low_hold=np.maximum((v < lh[:, 0]) * 1, (v < lh[:, 1]) * 2).astype(np.int8),
    )


def next_level(state: int, open_level: int, hold_level: int) -> int:
    """A track's new level: anything newly reached opens; open levels stay while held."""
    return max(open_level, min(state, hold_level))


def needs_walk(cols: LevelColumns, idx: np.ndarray, high_state: np.ndarray, low_state: np.ndarray) -> np.ndarray:
    """Mask of readings that may open, hold, clear or re-peak a hazard.

    A sensor is hot when it has a level open before the batch or any reading in the batch
    reaches one; every reading of a hot sensor is walked, so a later reading in the same
    batch can clear what an earlier one opened.
    """
    near = (cols.high_hold > 0) | (cols.low_hold > 0) | (cols.high_open > 0) | (cols.low_open > 0)
    hot = (high_state > 0) | (low_state > 0)
    hot[idx[near]] = True
    return hot[idx]
