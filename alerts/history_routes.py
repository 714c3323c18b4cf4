"""HTTP endpoints of inspectors' histories (`/history/...`), mounted on the alert service's app.

Same bearer tokens as the rest of the API; what a role may read is the data-class table in
history/classes.py (docs/data-classes.md), and reads of important data and every export go to
the history store's audit log.
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated dependencies at definition.

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from alerts import metrics
from alerts.auth import Principal, authenticate
from alerts.store import TaskStore
from config.settings import Settings
from history.accidents import AccidentInput, to_accident
from history.classes import Refused, check
from history.export import render
from history.filters import FilterError, Filters, make_filters
from history.query import NotFound
from history.service import Caller, History
from history.timefmt import RangeError, parse_range


def history_router(settings: Settings, store: TaskStore) -> APIRouter:
    """The `/history` endpoints over the task store's tokens; the history service opens on first use."""
    router = APIRouter(prefix="/history", tags=["history"])
    bearer = HTTPBearer(auto_error=False)
    state: dict[str, History] = {}

    def service() -> History:
        if "h" not in state:
            state["h"] = History(settings)
        return state["h"]

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        principal: Principal | None = authenticate(store, credentials.credentials) if credentials else None
        if principal is None:
            metrics.AUTH_REFUSED.labels("401").inc()
            raise HTTPException(401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"})
        return Caller(f"{principal.name} ({principal.token_id})", principal.role, principal.enterprise_id)

    Who = Annotated[Caller, Depends(caller)]

    @contextmanager
    def answers() -> Iterator[None]:
        """History errors as HTTP statuses: 422 bad input, 404 unknown id, 403 refused."""
        try:
            yield
        except (FilterError, RangeError) as exc:
            raise HTTPException(422, str(exc)) from None
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except Refused as exc:
            metrics.AUTH_REFUSED.labels("403").inc()
            raise HTTPException(403, str(exc)) from None

    def filters(
        since: str | None = None,
        until: str | None = None,
        enterprise: str | None = None,
        site: str | None = None,
        sensor: str | None = None,
        region: str | None = None,
        sector: str | None = None,
        rule: str | None = None,
        level: str | None = None,
    ) -> Filters:
        h = service()
        with answers():
            start, end = parse_range(since, until, h.tz)
            return make_filters(
                h.registry,
                start,
                end,
                enterprise=enterprise,
                site=site,
                sensor=sensor,
                region=region,
                sector=sector,
                rule=rule,
                level=level,
            )

    Query_ = Annotated[Filters, Depends(filters)]
    Limit = Annotated[int, Query(ge=1, le=100_000)]
    Offset = Annotated[int, Query(ge=0)]

    @router.get("/hazards")
    def hazards(who: Who, f: Query_, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        """Hazards, one row per hazard, newest first; times epoch ms and local (`*_local`, zone in `tz`)."""
        with answers():
            return service().page(who, "hazards", f, limit, offset).as_dict()

    @router.get("/incidents")
    def incidents(who: Who, f: Query_, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        """Incidents, one row per incident, newest first."""
        with answers():
            return service().page(who, "incidents", f, limit, offset).as_dict()

    @router.get("/readings")
    def readings(who: Who, f: Query_) -> dict[str, Any]:
        """Readings of a sensor, site or enterprise per bucket (min, mean, max, last, count) at the resolution
        that fits the range: `rp` says which policy was read, `interval_s` the bucket."""
        with answers():
            return service().readings(who, f)

    @router.get("/incidents/{incident_id}/timeline")
    def incident_timeline(incident_id: str, who: Who) -> dict[str, Any]:
        """An incident's state changes, its site's hazards that led to it, and the readings around each."""
        with answers():
            return service().timeline(who, incident_id)

    @router.get("/stats")
    def stats(who: Who, f: Query_) -> dict[str, Any]:
        """Per-enterprise figures over the range (alarms per day/rule, top sensors, time in alarm, MTTA, MTTR)."""
        with answers():
            ent = f.enterprise_id or who.enterprise_id
            tasks = [t.model_dump() for t in store.list_tasks(enterprise_id=ent, limit=100_000)] if ent else []
            return service().stats(who, f, tasks)

    @router.get("/export/{kind}")
    def export(
        kind: str, who: Who, f: Query_, format: Annotated[str, Query(pattern="^(csv|json)$")] = "csv"
    ) -> Response:
        """Every matching hazard or incident as CSV or JSON; the export is written to the audit log."""
        if kind not in ("hazards", "incidents"):
            raise HTTPException(404, f"nothing to export as {kind!r}: hazards or incidents")
        with answers():
            got, truncated = service().rows(who, kind, f, export=True)
        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        headers = {
            "Content-Disposition": f'attachment; filename="{kind}.{format}"',
            "X-Rows": str(len(got)),
            "X-Truncated": str(truncated).lower(),
        }
        return Response(render(got, format), media_type=media, headers=headers)

    @router.get("/accidents")
    def accidents(who: Who, f: Query_) -> list[dict[str, Any]]:
        """Recorded accidents in the range (default the last 7 days: pass `since`)."""
        with answers():
            return service().accidents(who, f)

    @router.post("/accidents", status_code=201)
    def add_accidents(body: AccidentInput | list[AccidentInput], who: Who) -> dict[str, Any]:
        """Enter one accident or several (all or none); returns their ids and how many were new."""
        h = service()
        given = body if isinstance(body, list) else [body]
        with answers():
            records = [to_accident(h.registry, a, h.tz) for a in given]
            new = h.add_accidents(who, records, f"api:{who.who}")
        return {"ids": [r.accident_id for r in records], "new": new}

    @router.get("/associate")
    def associate(
        who: Who,
        f: Query_,
        window_days: Annotated[int, Query(ge=1, le=365)] = 30,
        recent_days: Annotated[int, Query(ge=1, le=365)] = 30,
    ) -> dict[str, Any]:
        """Which hazard kinds and rules precede accidents (pass a long `since`, e.g. 365d), and risk per enterprise."""
        with answers():
            try:
                return service().associate(who, f, window_days, recent_days)
            except ValueError as exc:
                raise FilterError(str(exc)) from None

    @router.get("/audit")
    def audit(who: Who, limit: Limit = 1000) -> list[dict[str, Any]]:
        """The data-access audit log, newest first (admins)."""
        with answers():
            check("audit", who.role)
            return service().store.audit_log(limit)

    return router
