"""Public reports (举报投诉): checked, stored with a tracking number, and dispatched as an incident
of kind `report` through the same routing, tasks, escalation and audit as a sensor incident.

The report's incident has one timeline entry whose first word is `report`, so routing files can
send reports to the departments that handle them with `kinds: [report]`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from alerts.routing import Routing, facts_of, route_matches
from alerts.store import TaskStore, now_ms
from rules.models import IncidentEvent, TimelineEntry
from sensors.registry import Registry

log = logging.getLogger(__name__)
REPORT_KIND = "report"
REPORT_RULE = "report.public"
TRACKING_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read out over the phone
# Magic numbers of the photo types accepted: the declared content type is not trusted.
PHOTO_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
WEBP = "image/webp"


class FieldError(ValueError):
    """Input that cannot be accepted; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Photo:
    """One photo as uploaded: its bytes and the type found in them."""

    content_type: str
    data: bytes


@dataclass(frozen=True)
class ReportInput:
    """A report as the form sends it, before any check."""

    what: str
    when: str
    region: str = ""
    enterprise_id: str = ""
    address: str = ""
    contact: str = ""
    anonymous: bool = False


class Report(BaseModel):
    """A stored report, as inspectors see it."""

    tracking: str
    created_at: int
    updated_at: int
    status: str
    what: str
    enterprise_id: str | None
    address: str | None
    region: str
    happened_at: int
    contact: str | None
    source_hash: str
    incident_id: str
    linked_incident_id: str | None
    reason: str | None
    decided_by: str | None
    photos: int


def photo_type(data: bytes) -> str | None:
    """The image type the bytes really are (JPEG, PNG, WebP), or None."""
    for magic, kind in PHOTO_TYPES.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def check_report(
    raw: ReportInput,
    registry: Registry,
    *,
    tz: str,
    now: int,
    photos: list[tuple[str, bytes]],
    max_photos: int,
    max_photo_bytes: int,
) -> tuple[dict[str, Any], list[Photo]]:
    """The report's fields, cleaned, and its photos; FieldError names every field that is wrong."""
    errors: dict[str, str] = {}
    what = raw.what.strip()
    if len(what) < 5:
        errors["what"] = "describe what you saw in at least 5 characters"
    elif len(what) > 2000:
        errors["what"] = f"at most 2000 characters, got {len(what)}"
    enterprise_id = raw.enterprise_id.strip()
    address = raw.address.strip()
    region = raw.region.strip()
    enterprise = registry.enterprises.get(enterprise_id) if enterprise_id else None
    if enterprise_id and enterprise is None:
        errors["enterprise_id"] = "not an enterprise of the registry; leave it empty and give the address instead"
    if not enterprise_id and not address:
        errors["address"] = "give the enterprise or the address where it happened"
    if len(address) > 300:
        errors["address"] = f"at most 300 characters, got {len(address)}"
    if enterprise is not None and not region:
        region = enterprise.region
    if not region:
        errors["region"] = "choose the county or district"
    elif region not in registry.regions:
        errors["region"] = f"{region!r} is not a region code of the registry"
    happened = _parse_when(raw.when, tz)
    if happened is None:
        errors["when"] = "give the date and time as YYYY-MM-DDTHH:MM"
    elif happened > now + 5 * 60_000:
        errors["when"] = "lies in the future"
    elif happened < now - 366 * 86_400_000:
        errors["when"] = "more than a year ago"
    contact = raw.contact.strip()
    if raw.anonymous and contact:
        errors["contact"] = "an anonymous report has no contact; clear it or untick anonymous"
    elif len(contact) > 200:
        errors["contact"] = f"at most 200 characters, got {len(contact)}"
    checked: list[Photo] = []
    if len(photos) > max_photos:
        errors["photos"] = f"at most {max_photos} photos, got {len(photos)}"
    for name, data in photos[:max_photos]:
        kind = photo_type(data)
        if len(data) > max_photo_bytes:
            errors["photos"] = f"{name} is {len(data)} bytes; at most {max_photo_bytes} bytes a photo"
        elif kind is None:
            errors["photos"] = f"{name} is not a JPEG, PNG or WebP image"
        else:
            checked.append(Photo(kind, data))
    if errors:
        raise FieldError(errors)
    fields = {
        "what": what,
        "enterprise_id": enterprise_id or None,
        "address": address or None,
        "region": region,
        "happened_at": happened,
        "contact": contact or None,
    }
    return fields, checked


def _parse_when(text: str, tz: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))  # a form's datetime-local is the reporter's local time
    return int(moment.timestamp() * 1000)


def new_tracking(now: int) -> str:
    """A tracking number: the date and 8 random characters (not guessable, easy to read out)."""
    day = time.strftime("%Y%m%d", time.gmtime(now / 1000))
    return f"R{day}-" + "".join(secrets.choice(TRACKING_ALPHABET) for _ in range(8))


def report_incident(
    tracking: str, fields: dict[str, Any], registry: Registry, severity: str, now: int
) -> IncidentEvent:
    """The incident a report opens: kind `report`, at the enterprise (its first site) or the address."""
    enterprise = registry.enterprises.get(fields["enterprise_id"] or "")
    where = fields["address"] or (enterprise.name if enterprise else "")
    summary = fields["what"] if len(fields["what"]) <= 60 else fields["what"][:59] + "…"
    # No site: a report is about an enterprise or a place, and must not share a site's
    # inhibition or silences with the sensor incidents there. No enterprise id either: an
    # enterprise's operators see their enterprise's incidents, and must not read reports about it.
    return IncidentEvent(
        incident_id=f"INC-{tracking}",
        status="open",
        severity=severity,
        rule_id=REPORT_RULE,
        title=f"举报 {tracking}: {summary}",
        summary=f"report {tracking} from the public: {fields['what']}",
        site_id="",
        site_name=where,
        enterprise_id="",
        enterprise_name=enterprise.name if enterprise else "",
        region=fields["region"],
        sector=enterprise.sectors[0] if enterprise and enterprise.sectors else "",
        opened_at=now,
        updated_at=now,
        hazard_ids=[],
        open_hazard_ids=[],
        timeline=[TimelineEntry(ts=fields["happened_at"], what=f"{REPORT_KIND} {tracking} {where}")],
    )


def submit_report(
    store: TaskStore,
    routing: Routing,
    registry: Registry,
    fields: dict[str, Any],
    photos: list[Photo],
    *,
    source: str,
    severity: str,
    now: int | None = None,
) -> tuple[str, list[str]]:
    """Store a checked report and dispatch its incident; returns its tracking number and the departments told."""
    now = now_ms() if now is None else now
    tracking = new_tracking(now)
    incident = report_incident(tracking, fields, registry, severity, now)
    with store.transaction() as db:
        db.execute(
            "INSERT INTO reports (tracking, created_at, updated_at, status, what, enterprise_id, address, region,"
            " happened_at, contact, source_hash, incident_id, photos)"
            " VALUES (?, ?, ?, 'dispatched', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tracking,
                now,
                now,
                fields["what"],
                fields["enterprise_id"],
                fields["address"],
                fields["region"],
                fields["happened_at"],
                fields["contact"],
                source_hash(source),
                incident.incident_id,
                len(photos),
            ),
        )
        db.executemany(
            "INSERT INTO report_photos (tracking, idx, content_type, data) VALUES (?, ?, ?, ?)",
            [(tracking, i, p.content_type, p.data) for i, p in enumerate(photos)],
        )
    departments = dispatch(store, routing, incident, now)
    return tracking, departments


def dispatch(store: TaskStore, routing: Routing, incident: IncidentEvent, now: int) -> list[str]:
    """Route an incident and store its tasks and notifications, as the incident consumer does."""
    matches = route_matches(facts_of(incident), routing)
    if not matches:
        log.warning("incident %s (region %s) matched no route: nobody is told", incident.incident_id, incident.region)
    store.record_incident(
        incident,
        [m.department for m in matches],
        {m.department: getattr(m.ack_minutes, incident.severity) for m in matches},
        now=now,
        send_resolved={m.department: m.send_resolved for m in matches},
    )
    return [m.department for m in matches]


def source_hash(source: str) -> str:
    """A short salted hash of the sender's address: equal sources compare equal, the address is not kept."""
    return hashlib.sha256(b"safewatch-report:" + source.encode()).hexdigest()[:16]


def get_report(store: TaskStore, tracking: str) -> Report | None:
    """One report, or None."""
    with store.reading() as db:
        row = db.execute("SELECT * FROM reports WHERE tracking = ?", (tracking,)).fetchone()
    return Report(**dict(row)) if row else None


def list_reports(store: TaskStore, *, status: str | None = None, limit: int = 200) -> list[Report]:
    """Reports, newest first."""
    where, args = (" WHERE status = ?", [status]) if status else ("", [])
    with store.reading() as db:
        rows = db.execute(f"SELECT * FROM reports{where} ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
    return [Report(**dict(r)) for r in rows]


def report_photo(store: TaskStore, tracking: str, idx: int) -> Photo | None:
    """One photo of a report, or None."""
    with store.reading() as db:
        row = db.execute(
            "SELECT content_type, data FROM report_photos WHERE tracking = ? AND idx = ?", (tracking, idx)
        ).fetchone()
    return Photo(row["content_type"], bytes(row["data"])) if row else None


def decide(
    store: TaskStore,
    routing: Routing,
    tracking: str,
    *,
    by: str,
    reason: str,
    linked_incident_id: str | None = None,
    now: int | None = None,
) -> Report:
    """Link a report to an existing incident, or (without one) close it as unfounded; either way the
    report's own incident is closed with the reason on its timeline, and its departments are told."""
    now = now_ms() if now is None else now
    report = get_report(store, tracking)
    if report is None:
        raise KeyError(tracking)
    if report.status != "dispatched":
        raise ValueError(f"report {tracking} was already decided ({report.status}) by {report.decided_by}")
    if linked_incident_id is not None and store.latest_incident(linked_incident_id) is None:
        raise LookupError(f"no incident {linked_incident_id}")
    status = "linked" if linked_incident_id else "unfounded"
    with store.transaction() as db:
        db.execute(
            "UPDATE reports SET status = ?, linked_incident_id = ?, reason = ?, decided_by = ?, updated_at = ?"
            " WHERE tracking = ? AND status = 'dispatched'",
            (status, linked_incident_id, reason, by, now, tracking),
        )
    current = store.latest_incident(report.incident_id)
    if current is not None:
        incident = IncidentEvent.model_validate(current)
        what = f"linked to {linked_incident_id}" if linked_incident_id else "unfounded"
        closed = incident.model_copy(
            update={
                "status": "closed",
                "updated_at": max(now, incident.updated_at + 1),
                "closed_at": now,
                "timeline": [*incident.timeline, TimelineEntry(ts=now, what=f"{what}: {reason} ({by})")],
            }
        )
        dispatch(store, routing, closed, now)
    decided = get_report(store, tracking)
    assert decided is not None
    return decided


class RateLimit:
    """At most `limit` events per source in a sliding hour (per process: enough for one service)."""

    def __init__(self, limit: int, window_s: float = 3600.0):
        self.limit = limit
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, source: str, now: float | None = None) -> float:
        """Count one event; 0 if allowed, else the seconds until the next one would be."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._seen) > 10_000:  # forget sources whose window has passed, so memory stays bounded
                self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - self.window_s}
            seen = self._seen.setdefault(source, deque())
            while seen and seen[0] <= now - self.window_s:
                seen.popleft()
            if len(seen) >= self.limit:
                return seen[0] + self.window_s - now
            seen.append(now)
            return 0.0
