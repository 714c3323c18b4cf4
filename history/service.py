"""One entry point for the CLI and the HTTP API: checks the caller's role against the data class, queries, audits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from config.settings import Settings
from sensors.registry import Registry, load_registry

from . import classes, query, stats
from .accidents import Accident
from .associate import DAY_MS, AccidentFact, HazardFact, associate, risk_scores
from .filters import FilterError, Filters
from .store import HistoryStore


@dataclass(frozen=True)
class Caller:
    """Who asks: a token holder through the API, or the local user at the command line."""

    who: str
    role: str
    enterprise_id: str | None = None


class History:
    """History queries over InfluxDB and the history store, for one settings object."""

    def __init__(self, settings: Settings, registry: Registry | None = None, store: HistoryStore | None = None):
        self.settings = settings
        self.registry = registry or load_registry(settings.registry)
        self.store = store or HistoryStore(settings.history_db_path)
        self.tz = ZoneInfo(settings.history_tz)

    def close(self) -> None:
        """Close the history store."""
        self.store.close()

    # --- access ---------------------------------------------------------------------------

    def scoped(self, caller: Caller, kind: str, f: Filters, *, export: bool = False) -> Filters:
        """The filters an enterprise operator may use: its own enterprise only."""
        c = classes.check(kind, caller.role, export=export)
        if caller.role == "enterprise" and c.own_enterprise_only:
            if f.enterprise_id not in (None, caller.enterprise_id):
                raise classes.Refused("an enterprise operator reads only its own enterprise")
            site = self.registry.sites.get(f.site_id or "")
            sensor = self.registry.sensors.get(f.sensor_id or "")
            if any(x is not None and x.enterprise_id != caller.enterprise_id for x in (site, sensor)):
                raise classes.Refused("this site or sensor belongs to another enterprise")
            f = replace(f, enterprise_id=caller.enterprise_id)
        return f

    def audited(self, caller: Caller, kind: str, action: str, n: int, detail: str) -> None:
        """Write the access to the audit log if its class asks for it."""
        c = classes.TABLE[kind]
        if classes.must_audit(c, action):
            self.store.audit(caller.who, caller.role, action, kind, c.grade, n, detail)

    # --- queries ----------------------------------------------------------------------------

    def rows(self, caller: Caller, kind: str, f: Filters, *, export: bool = False) -> tuple[list[dict], bool]:
        """Every hazard or incident row matching the filters (role-checked, audited)."""
        f = self.scoped(caller, kind, f, export=export)
        if kind == "hazards":
            got, truncated = query.hazard_rows(self.settings, self.registry, f)
        elif kind == "incidents":
            got, truncated = query.incident_rows(self.settings, self.registry, f)
        else:
            raise FilterError(f"unknown kind {kind!r} (hazards or incidents)")
        self.audited(caller, kind, "export" if export else "read", len(got), _describe(f))
        return got, truncated

    def page(self, caller: Caller, kind: str, f: Filters, limit: int, offset: int) -> query.Page:
        """One page of hazards or incidents."""
        if limit > self.settings.history_max_rows:
            raise FilterError(f"limit above {self.settings.history_max_rows} (SAFEWATCH_HISTORY_MAX_ROWS)")
        got, truncated = self.rows(caller, kind, f)
        return query.page(got, limit, offset, truncated)

    def readings(self, caller: Caller, f: Filters, *, export: bool = False) -> dict[str, Any]:
        """Readings per sensor at the resolution that fits the range (min, mean, max, last, count per bucket)."""
        if not (f.sensor_id or f.site_id or f.enterprise_id) and caller.role != "enterprise":
            raise FilterError("readings are read per sensor, site or enterprise: give one of them")
        f = self.scoped(caller, "readings", f, export=export)
        res, points = query.readings(self.settings, self.registry, f)
        for p in points:
            sensor = self.registry.sensors.get(p["sensor_id"])
            p["quantity"], p["unit"] = (sensor.quantity, sensor.unit) if sensor else (None, None)
        self.audited(caller, "readings", "export" if export else "read", len(points), _describe(f))
        return {"rp": res.rp, "interval_s": res.interval_s, "tz": self.tz.key, "points": points}

    def timeline(self, caller: Caller, incident_id: str) -> dict[str, Any]:
        """An incident's timeline (its enterprise's operator only for their own)."""
        classes.check("incidents", caller.role)
        out = query.timeline(self.settings, self.registry, incident_id)
        if caller.role == "enterprise" and out["incident"]["enterprise_id"] != caller.enterprise_id:
            raise classes.Refused("this incident belongs to another enterprise")
        self.audited(caller, "incidents", "read", len(out["entries"]), f"timeline {incident_id}")
        return out

    def stats(self, caller: Caller, f: Filters, tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Per-enterprise figures (needs an enterprise filter)."""
        if not f.enterprise_id and caller.role != "enterprise":
            raise FilterError("stats are per enterprise: give an enterprise (credit code or name)")
        hazards, _ = self.rows(caller, "hazards", f)
        incidents, _ = self.rows(caller, "incidents", replace(f, level=None, sensor_id=None))
        ent = self.scoped(caller, "hazards", f).enterprise_id or ""
        out = {
            "enterprise_id": ent,
            "enterprise_name": self.registry.enterprises[ent].name if ent in self.registry.enterprises else None,
            "since_local": query.local(f.start_ms, self.tz),
            "until_local": query.local(f.end_ms, self.tz),
            "tz": self.tz.key,
            **stats.hazard_stats(hazards, f.start_ms, f.end_ms, self.tz),
            **stats.response_times(incidents, [t for t in tasks or [] if t.get("enterprise_id") == ent]),
        }
        return out

    # --- accidents and association ------------------------------------------------------------

    def add_accidents(self, caller: Caller, accidents: list[Accident], source: str) -> int:
        """Store accidents (admins, duty officers and inspectors enter them)."""
        classes.check("accidents", caller.role)
        n = self.store.add_accidents(accidents, source)
        self.store.audit(caller.who, caller.role, "write", "accidents", "important", len(accidents), source)
        return n

    def accidents(self, caller: Caller, f: Filters) -> list[dict[str, Any]]:
        """Accidents in the range, names beside codes."""
        classes.check("accidents", caller.role)
        got = self.store.accidents(enterprise_id=f.enterprise_id, start_ms=f.start_ms, end_ms=f.end_ms)
        out = [query.with_local_times(query.names(self.registry, a.model_dump()), self.tz, ("ts",)) for a in got]
        self.audited(caller, "accidents", "read", len(out), _describe(f))
        return out

    def associate(self, caller: Caller, f: Filters, window_days: int, recent_days: int) -> dict[str, Any]:
        """Associations over the range, and each enterprise's risk from its hazards of the last `recent_days`."""
        classes.check("accidents", caller.role)
        hazards, truncated = self.rows(caller, "hazards", f)
        facts = [
            HazardFact(h["enterprise_id"], h["sector"], h["kind"], h["rule_id"], h["start"])
            for h in hazards
            if h["enterprise_id"]
        ]
        acc = self.store.accidents(enterprise_id=f.enterprise_id, start_ms=f.start_ms, end_ms=f.end_ms)
        sectors = {e.id: e.sectors for e in self.registry.enterprises.values()}
        if f.enterprise_id:
            sectors = {f.enterprise_id: sectors[f.enterprise_id]}
        found = associate(
            facts,
            [AccidentFact(a.enterprise_id, a.ts) for a in acc],
            sectors,
            f.start_ms,
            f.end_ms,
            window_days=window_days,
        )
        recent = [h for h in facts if h.start >= f.end_ms - recent_days * DAY_MS]
        risks = risk_scores(recent, found, sectors)
        self.audited(caller, "accidents", "read", len(acc), f"associate {_describe(f)}")
        return {
            "window_days": window_days,
            "hazards": len(facts),
            "accidents": len(acc),
            "truncated": truncated,
            "associations": [asdict(a) for a in found],
            "risk": [{**asdict(r), "enterprise_name": self.registry.enterprises[r.enterprise_id].name} for r in risks],
        }


def _describe(f: Filters) -> str:
    """The filters of a query, for the audit log."""
    return " ".join(f"{k}={v}" for k, v in asdict(f).items() if v is not None)
