"""Between the rule machines and the world: maintenance windows, flapping, hazard ids.

Rule machines report what is true (`Transition`s). The publisher decides what is said:
- during a maintenance/calibration window of a sensor or its site nothing about it is
  published; each suppressed transition is counted and recorded as a `suppressed` event, and
  when the window ends the truth is re-published at once (a still-bad value opens a hazard);
- a hazard that opens more than `max_changes` times within `window_s` is held open as one
  `flapping` hazard with its count, and clears only after a quiet `window_s`.
Every decision depends on event times only, so replay and the worker publish the same.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .catalog import Flapping
from .models import stable_id

Key = tuple[str, str, str]  # (site_id, subject: sensor or site id, kind)


@dataclass(kw_only=True)
class Transition:
    """A rule machine's report: this hazard became true (`open`) or false (`clear`) at `ts`."""

    site_id: str
    subject: str
    sensor: int | None  # registry row, None for site-level hazards
    kind: str
    event: str
    ts: int
    value: float
    threshold: float
    level: int
    colour: str
    rule_id: str
    peak: float

    @property
    def key(self) -> Key:
        return (self.site_id, self.subject, self.kind)


@dataclass
class MaintenanceWindow:
    """Sensor or site under maintenance or calibration; event-time bounds in ms."""

    id: str
    target: str
    start: int
    end: int
    who: str
    why: str


@dataclass
class Held:
    """A published, open hazard."""

    hazard_id: str
    start: int
    open: dict  # the Transition that opened it, as a dict
    flapping: bool = False
    flap_count: int = 0
    pending_clear: int | None = None  # internally cleared at, while held as flapping
    last_clear: dict | None = None


@dataclass
class Published:
    """An event to publish: the transition plus what the publisher decided."""

    tr: Transition
    event: str  # open, clear, update, suppressed
    hazard_id: str
    start: int
    end: int | None = None
    flapping: bool = False
    flap_count: int = 0
    note: str | None = None


@dataclass
class Publisher:
    """Publishing state for every site; plain data, checkpointed per site."""

    flapping: dict[str, Flapping]  # sector → settings
    site_sector: dict[str, str]
    windows: list[MaintenanceWindow] = field(default_factory=list)
    internal: dict[Key, dict] = field(default_factory=dict)  # internally open: the opening transition
    held: dict[Key, Held] = field(default_factory=dict)
    opens: dict[Key, deque] = field(default_factory=dict)
    reconciled: set[str] = field(default_factory=set)  # window ids already re-published
    suppressed: Counter = field(default_factory=Counter)  # window id → transitions suppressed

    def _window(self, site_id: str, subject: str, ts: int) -> MaintenanceWindow | None:
        for w in self.windows:
            if w.start <= ts < w.end and w.target in (subject, site_id):
                return w
        return None

    def transition(self, tr: Transition) -> list[Published]:
        """Take one rule transition; returns what to publish."""
        out = self._reconcile_due(tr.site_id, tr.ts)
        key = tr.key
        if tr.event == "open":
            self.internal[key] = dict(vars(tr))
        else:
            self.internal.pop(key, None)
        w = self._window(tr.site_id, tr.subject, tr.ts)
        if w is not None:
            self.suppressed[w.id] += 1
            return out + [
                Published(
                    tr, "suppressed", "", tr.ts, note=f"{tr.event} suppressed: maintenance {w.id} by {w.who} ({w.why})"
                )
            ]
        return out + self._publish(key, tr)

    def _publish(self, key: Key, tr: Transition) -> list[Published]:
        cfg = self.flapping.get(self.site_sector.get(tr.site_id, ""))
        window_ms = int(cfg.window_s * 1000) if cfg else 0
        out: list[Published] = []
        h = self.held.get(key)
        if tr.event == "open":
            if h is not None and h.pending_clear is not None and tr.ts >= h.pending_clear + window_ms:
                out += self._settle(key, h, h.pending_clear + window_ms)
                h = None
            times = self.opens.setdefault(key, deque())
            times.append(tr.ts)
            while times and times[0] < tr.ts - window_ms:
                times.popleft()
            if h is not None:
                if h.pending_clear is not None:  # flapping: stays one hazard, counted
                    h.pending_clear = None
                    h.flap_count += 1
                return out
            hid = stable_id("HZ", tr.subject, tr.kind, tr.ts)
            self.held[key] = Held(hid, tr.ts, dict(vars(tr)))
            return out + [Published(tr, "open", hid, tr.ts)]
        if h is None:
            return out
        times = self.opens.get(key, deque())
        while times and times[0] < tr.ts - window_ms:
            times.popleft()
        if cfg is not None and len(times) >= cfg.max_changes:
            h.pending_clear = tr.ts
            h.last_clear = dict(vars(tr))
            if not h.flapping:
                h.flapping, h.flap_count = True, len(times)
                return out + [
                    Published(
                        tr,
                        "update",
                        h.hazard_id,
                        h.start,
                        flapping=True,
                        flap_count=h.flap_count,
                        note=f"flapping: opened {len(times)} times in {cfg.window_s:g} s",
                    )
                ]
            return out
        del self.held[key]
        return out + [
            Published(tr, "clear", h.hazard_id, h.start, end=tr.ts, flapping=h.flapping, flap_count=h.flap_count)
        ]

    def _settle(self, key: Key, h: Held, at: int) -> list[Published]:
        del self.held[key]
        assert h.last_clear is not None  # settling is only scheduled after an internal clear
        tr = Transition(**{**h.last_clear, "ts": at})
        return [
            Published(
                tr,
                "clear",
                h.hazard_id,
                h.start,
                end=h.pending_clear,
                flapping=True,
                flap_count=h.flap_count,
                note="settled after flapping",
            )
        ]

    def _reconcile_due(self, site_id: str, now: int) -> list[Published]:
        out: list[Published] = []
        for w in self.windows:
            if w.end <= now and w.id not in self.reconciled and self._touches(w, site_id):
                self.reconciled.add(w.id)
                out += self._reconcile(w)
        return out

    def _touches(self, w: MaintenanceWindow, site_id: str) -> bool:
        return w.target == site_id or any(
            k[0] == site_id and k[1] == w.target for k in list(self.internal) + list(self.held)
        )

    def _reconcile(self, w: MaintenanceWindow) -> list[Published]:
        """Window over: publish what is true now, as if the rules had just been evaluated."""
        out: list[Published] = []
        keys = {k for k in list(self.internal) + list(self.held) if w.target in (k[0], k[1])}
        for key in sorted(keys):
            if key in self.internal and key not in self.held:
                tr = Transition(**{**self.internal[key], "ts": w.end})
                out += self._publish(key, tr)
                out[-1].note = f"re-evaluated after maintenance {w.id}"
            elif key in self.held and key not in self.internal:
                h = self.held[key]
                tr = Transition(**{**h.open, "event": "clear", "ts": w.end})
                out += self._publish(key, tr)
        return out

    def advance(self, now_of) -> list[Published]:
        """Time passed with no reading (`now_of(site_id)` is each site's clock): settle quiet flapping
        hazards, end maintenance windows."""
        out: list[Published] = []
        for site_id in sorted({k[0] for k in list(self.internal) + list(self.held)}):
            out += self._reconcile_due(site_id, now_of(site_id))
        for key, h in list(self.held.items()):
            cfg = self.flapping.get(self.site_sector.get(key[0], ""))
            if h.pending_clear is not None and cfg and now_of(key[0]) >= h.pending_clear + int(cfg.window_s * 1000):
                out += self._settle(key, h, h.pending_clear + int(cfg.window_s * 1000))
        return out

    # --- checkpoints ------------------------------------------------------------------------
    def snapshot_sites(self, site_ids: Iterable[str]) -> dict[str, dict]:
        """These sites' publishing state as plain data, in one pass over the tables (a pass per
        site made a checkpoint of every site cost sites × keys)."""
        out: dict[str, dict] = {s: {"internal": [], "held": [], "opens": []} for s in site_ids}
        for k, v in self.internal.items():
            if k[0] in out:
                out[k[0]]["internal"].append([list(k), v])
        for k, h in self.held.items():
            if k[0] in out:
                out[k[0]]["held"].append([list(k), dict(vars(h))])
        for k, times in self.opens.items():
            if times and k[0] in out:
                out[k[0]]["opens"].append([list(k), list(times)])
        return out

    def restore_site(self, site_id: str, snap: dict) -> None:
        """Replace this site's publishing state."""
        for table in (self.internal, self.held, self.opens):
            for k in [k for k in table if k[0] == site_id]:
                del table[k]
        for k, v in snap.get("internal", []):
            self.internal[tuple(k)] = v
        for k, v in snap.get("held", []):
            self.held[tuple(k)] = Held(**v)
        for k, v in snap.get("opens", []):
            self.opens[tuple(k)] = deque(v)
