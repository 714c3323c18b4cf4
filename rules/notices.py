"""Gather a site's instrument hazards into one maintenance notice.

Instrument health (a sensor or the whole site offline, a stuck value, a sensor fault) is work
for maintenance, not an incident: the duty room gets one notice per site, not one item per
hazard. A notice opens with the site's first instrument hazard, lists what is at fault and
since when, updates when a sensor joins or clears, and closes when all have cleared.

Updates are rate-limited on event time: at most one per `UPDATE_MIN_MS`; a change inside that
interval is held and goes out at its end (stamped with the end), when the next instrument
hazard of the site or the engine's timer passes it. Open and close are never held. A notice is
a function of its site's hazard events and clock only, so replay and the worker agree.
State is per site and plain data, so it checkpoints with the site.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from .correlation import NOT_CORRELATED, SiteInfo
from .models import SEVERITY_RANK, HazardEvent, NoticeEvent, NoticeFault, stable_id

INSTRUMENT_KINDS = NOT_CORRELATED  # the hazards a notice gathers are exactly those kept out of incidents
# One update a minute at most: the publisher already holds a flapping hazard open as one, so what is
# left to limit is many sensors of one site joining or clearing one after another.
UPDATE_MIN_MS = 60_000


@dataclass
class SiteNotice:
    """The notice state of one site; `notice_id` None while nothing is at fault."""

    notice_id: str | None = None
    opened_at: int = 0
    faults: dict[str, dict] = field(default_factory=dict)  # hazard id → NoticeFault fields
    hazard_ids: list[str] = field(default_factory=list)
    severity: str = "blue"
    sent_at: int = 0  # event time of the last notice event
    pending: bool = False  # a change not yet published (held by the rate limit)

    def to_dict(self) -> dict:
        """Plain data for the checkpoint (shares its containers: serialise it at once)."""
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict) -> SiteNotice:
        """Inverse of to_dict."""
        return cls(**d)


def observe(state: SiteNotice, h: HazardEvent, info: SiteInfo) -> list[NoticeEvent]:
    """Take one hazard event of the site; returns the notice events it causes (most often none or one)."""
    if h.kind not in INSTRUMENT_KINDS or h.event == "suppressed":
        return []
    out = _due(state, h.ts, info)
    if h.event == "open":
        fault = _fault(h)
        if state.notice_id is None:
            state.notice_id = stable_id("NOTICE", h.site_id, h.ts)
            state.opened_at = h.ts
            state.faults, state.hazard_ids = {h.hazard_id: fault}, [h.hazard_id]
            state.severity = h.severity
            return out + [_emit(state, info, "open", h.ts)]
        if state.faults.get(h.hazard_id) == fault:
            return out  # the same hazard again (a redelivery)
        state.faults[h.hazard_id] = fault
        if h.hazard_id not in state.hazard_ids:
            state.hazard_ids.append(h.hazard_id)
    elif h.event == "update":
        old = state.faults.get(h.hazard_id)
        if old is None or old == {**old, "flapping": h.flapping, "severity": h.severity}:
            return out
        state.faults[h.hazard_id] = {**old, "flapping": h.flapping, "severity": h.severity}
    else:  # clear
        if state.faults.pop(h.hazard_id, None) is None:
            return out
        if not state.faults:
            closed = _emit(state, info, "closed", max(h.ts, state.sent_at))
            _reset(state)
            return out + [closed]
    if h.ts >= state.sent_at + UPDATE_MIN_MS:
        return out + [_emit(state, info, "update", h.ts)]
    state.pending = True
    return out


def _reset(state: SiteNotice) -> None:
    """Back to "nothing at fault": the next instrument hazard opens a new notice."""
    for name, value in asdict(SiteNotice()).items():
        setattr(state, name, value)


def tick(state: SiteNotice, now: int, info: SiteInfo) -> list[NoticeEvent]:
    """The site's clock is at `now`: publish a held change whose interval has ended."""
    return _due(state, now, info)


def _due(state: SiteNotice, now: int, info: SiteInfo) -> list[NoticeEvent]:
    if state.pending and state.notice_id is not None and now >= state.sent_at + UPDATE_MIN_MS:
        return [_emit(state, info, "update", state.sent_at + UPDATE_MIN_MS)]
    return []


def _fault(h: HazardEvent) -> dict:
    return {
        "hazard_id": h.hazard_id,
        "sensor_id": h.sensor_id,
        "kind": h.kind,
        "quantity": h.quantity,
        "severity": h.severity,
        "since": h.start,
        "flapping": h.flapping,
    }


def _emit(state: SiteNotice, info: SiteInfo, status: str, ts: int) -> NoticeEvent:
    faults = [] if status == "closed" else sorted(state.faults.values(), key=lambda f: (f["since"], f["hazard_id"]))
    if faults:
        state.severity = max((f["severity"] for f in faults), key=lambda c: SEVERITY_RANK[c])
    state.sent_at, state.pending = ts, False
    title, summary = describe(faults, len(state.hazard_ids), info.site_name)
    assert state.notice_id is not None
    return NoticeEvent(
        notice_id=state.notice_id,
        status=status,
        severity=state.severity,
        title=title,
        summary=summary,
        **asdict(info),  # where: site, enterprise, region, sector
        opened_at=state.opened_at,
        updated_at=ts,
        closed_at=ts if status == "closed" else None,
        faults=[NoticeFault(**f) for f in faults],
        hazard_ids=list(state.hazard_ids),
    )


def describe(faults: list[dict], gathered: int, site_name: str) -> tuple[str, str]:
    """Title and summary for people: what is at fault now, or that all is clear."""
    if not faults:
        return (
            f"{site_name}: instrument maintenance — all clear",
            f"all clear: {gathered} instrument hazard{'s' if gathered != 1 else ''} gathered, none open",
        )
    kinds = Counter(f["kind"] for f in faults)
    if "site_offline" in kinds:
        what = "the whole site is offline"
    elif len(faults) == 1:
        what = f"{faults[0]['kind']} at {faults[0]['sensor_id']}"
    else:
        sensors = len({f["sensor_id"] for f in faults})
        what = f"{sensors} sensors at fault (" + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items())) + ")"
    lines = "; ".join(f"{f['kind']} {f['sensor_id'] or 'site'} since {_utc(f['since'])}" for f in faults)
    return f"{site_name}: instrument maintenance — {what}", f"{len(faults)} at fault: {lines}"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
