"""The duty console's pages and their API (`/v1/...`), and public reports, on the alert service's app.

Pages (`/`, `/wall`, `/report`) are static files; the console and wall call the API with the
bearer token the user typed in (kept in the tab's sessionStorage), so the API's roles apply to
every button. The report form and the tracking lookup need no token.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases below as objects.

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from alerts import reports
from alerts.auth import Principal
from alerts.console import board, events, history
from alerts.console.directory import Directory
from alerts.routing import Routing
from alerts.store import TaskStore, now_ms
from config.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
# The pages hold a bearer token: nothing but this service's own scripts may run or be reached.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
DECIDE = ("admin", "duty_officer", "inspector")  # who may link a report or close it as unfounded
Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class LinkBody(BaseModel):
    """The existing incident a report is about, and why."""

    incident_id: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Reason


class UnfoundedBody(BaseModel):
    """Why a report is closed as unfounded."""

    reason: Reason


def add_console(
    app: FastAPI,
    settings: Settings,
    store: TaskStore,
    routing: Callable[[], Routing],
    names: Directory,
    role: Callable[..., Callable[[Principal], Principal]],
    refuse: Callable[[str], None],
    read_roles: tuple[str, ...],
    overview_roles: tuple[str, ...],
) -> None:
    """Mount the pages, the console API and the report API on `app`."""
    Reader = Annotated[Principal, Depends(role(*read_roles))]
    Overseer = Annotated[Principal, Depends(role(*overview_roles))]
    Decider = Annotated[Principal, Depends(role(*DECIDE))]
    limiter = reports.RateLimit(settings.reports_per_hour)
    app.state.stopping = threading.Event()  # set by the service before it stops: ends the event streams

    app.mount("/static/console", StaticFiles(directory=STATIC), name="console-static")
    # The form parser would spool a body of any size to disk before the handler sees it: refuse
    # an oversized report by its declared length first (browsers always declare it for a form).
    max_body = settings.reports_max_photos * settings.reports_photo_max_bytes + 256 * 1024

    @app.middleware("http")
    async def limit_report_body(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if request.method == "POST" and request.url.path == "/v1/reports":
            length = request.headers.get("content-length", "")
            if not length.isdigit():
                return JSONResponse({"detail": "a report needs a Content-Length header"}, status_code=411)
            if int(length) > max_body:
                detail = [{"field": "photos", "message": f"the report is larger than {max_body} bytes in all"}]
                return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)

    def page(name: str) -> Callable[[], FileResponse]:
        def serve() -> FileResponse:
            return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

        return serve

    app.get("/", include_in_schema=False)(page("console.html"))
    app.get("/wall", include_in_schema=False)(page("wall.html"))
    app.get("/report", include_in_schema=False)(page("report.html"))

    def own(principal: Principal) -> str | None:
        return principal.enterprise_id if principal.role == "enterprise" else None

    @app.get("/v1/me")
    def me(principal: Reader) -> dict[str, Any]:
        """Who the token belongs to, and the console's time zone."""
        return {
            "name": principal.name,
            "role": principal.role,
            "enterprise_id": principal.enterprise_id,
            "timezone": settings.console_timezone,
            "now": now_ms(),
        }

    @app.get("/v1/board")
    def get_board(principal: Reader) -> dict[str, Any]:
        """Open incidents with names, rule texts, tasks and deadlines, worst first (an enterprise: its own)."""
        return {"now": now_ms(), "items": board.board(store, principal, routing(), names)}

    @app.get("/v1/wall")
    def get_wall(principal: Reader) -> dict[str, Any]:
        """Counts by city and sector, open red/orange incidents, enterprises by risk colour, latest events."""
        return {"now": now_ms(), **board.wall(store, principal, routing(), names)}

    @app.get("/v1/events")
    async def get_events(request: Request, principal: Reader) -> StreamingResponse:
        """Server-sent events: `change` whenever an incident, task or report this caller may see changes."""
        body = events.stream(
            store,
            enterprise_id=own(principal),
            reports=principal.role in DECIDE,
            poll_s=settings.console_poll_s,
            disconnected=request.is_disconnected,
            stopping=request.app.state.stopping,
        )
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    @app.get("/v1/incidents/{incident_id}/detail")
    async def incident_detail(incident_id: str, principal: Reader) -> dict[str, Any]:
        """Timeline, hazards with the readings around each (InfluxDB), tasks with delivery history and trail."""
        incident = await asyncio.to_thread(store.latest_incident, incident_id)
        if incident is None:
            raise HTTPException(404, f"no incident {incident_id}")
        if principal.role == "enterprise" and incident.get("enterprise_id") != principal.enterprise_id:
            refuse("this incident belongs to another enterprise")
        detail = await asyncio.to_thread(_detail, store, incident, principal, routing(), names)
        try:
            detail["hazards"] = await asyncio.to_thread(history.hazard_charts, settings, incident, now_ms())
            detail["hazards_error"] = None
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            # The store still answers when InfluxDB does not: show the rest, say what is missing.
            detail["hazards"], detail["hazards_error"] = [], f"InfluxDB not reachable: {type(exc).__name__}"
        return detail

    @app.get("/v1/report-form")
    def report_form() -> dict[str, Any]:
        """What the public form offers: regions and enterprises of the registry, photo limits (no token)."""
        return {
            "regions": names.regions(),
            "enterprises": names.enterprises(),
            "max_photos": settings.reports_max_photos,
            "photo_max_bytes": settings.reports_photo_max_bytes,
            "timezone": settings.console_timezone,
        }

    @app.post("/v1/reports", status_code=201)
    async def submit_report(
        request: Request,
        what: Annotated[str, Form()] = "",
        when: Annotated[str, Form()] = "",
        region: Annotated[str, Form()] = "",
        enterprise_id: Annotated[str, Form()] = "",
        address: Annotated[str, Form()] = "",
        contact: Annotated[str, Form()] = "",
        anonymous: Annotated[str, Form()] = "",
        photos: Annotated[list[UploadFile] | None, File()] = None,
    ) -> JSONResponse:
        """A public report (no token): checked, stored, dispatched; answers its tracking number."""
        source = request.client.host if request.client else "unknown"
        if names.registry is None:
            raise HTTPException(503, "the registry is not loaded; reports cannot be checked now")
        uploads = []
        for upload in [p for p in photos or [] if p.filename]:
            # Read one byte past the limit: enough to know it is too big without reading it all.
            data = await upload.read(settings.reports_photo_max_bytes + 1)
            uploads.append((upload.filename or "photo", data))
        raw = reports.ReportInput(
            what=what,
            when=when,
            region=region,
            enterprise_id=enterprise_id,
            address=address,
            contact=contact,
            anonymous=anonymous.lower() in ("1", "true", "on", "yes"),
        )
        try:
            fields, checked = reports.check_report(
                raw,
                names.registry,
                tz=settings.console_timezone,
                now=now_ms(),
                photos=uploads,
                max_photos=settings.reports_max_photos,
                max_photo_bytes=settings.reports_photo_max_bytes,
            )
        except reports.FieldError as exc:
            detail = [{"field": k, "message": v} for k, v in exc.errors.items()]
            return JSONResponse({"detail": detail}, status_code=422)
        wait = limiter.take(source)
        if wait > 0:
            return JSONResponse(
                {"detail": f"too many reports from this address; try again in {int(wait) + 1} s"},
                status_code=429,
                headers={"Retry-After": str(int(wait) + 1)},
            )
        tracking, departments = await asyncio.to_thread(
            reports.submit_report,
            store,
            routing(),
            names.registry,
            fields,
            checked,
            source=source,
            severity=settings.reports_severity,
        )
        request.app.state.on_queued()
        return JSONResponse({"tracking": tracking, "status": "dispatched", "departments": len(departments)}, 201)

    @app.get("/v1/reports/{tracking}")
    def track_report(tracking: str) -> dict[str, Any]:
        """A report's progress by its tracking number (no token; nothing about who sent it)."""
        report = reports.get_report(store, tracking.strip().upper())
        if report is None:
            raise HTTPException(404, f"no report {tracking}")
        tasks = store.list_tasks(incident_id=report.incident_id)
        return {
            "tracking": report.tracking,
            "status": report.status,
            "created_at": report.created_at,
            "updated_at": report.updated_at,
            "handled": bool(tasks)
            and all(t.status in ("acknowledged", "in_progress", "resolved", "closed") for t in tasks),
            "finished": bool(tasks) and all(t.status in ("resolved", "closed") for t in tasks),
            "reason": report.reason if report.status == "unfounded" else None,
        }

    @app.get("/v1/reports", response_model=list[reports.Report])
    def list_reports(principal: Overseer, status: str | None = None) -> list[reports.Report]:
        """Every report, newest first, with contact and source hash (regulators only)."""
        return reports.list_reports(store, status=status)

    @app.get("/v1/reports/{tracking}/photos/{idx}")
    def report_photo(tracking: str, idx: int, principal: Overseer) -> Response:
        """One photo of a report (regulators only)."""
        photo = reports.report_photo(store, tracking, idx)
        if photo is None:
            raise HTTPException(404, f"no photo {idx} of report {tracking}")
        return Response(photo.data, media_type=photo.content_type, headers={"X-Content-Type-Options": "nosniff"})

    def decide(tracking: str, principal: Principal, reason: str, incident_id: str | None) -> reports.Report:
        try:
            return reports.decide(
                store, routing(), tracking, by=principal.name, reason=reason, linked_incident_id=incident_id
            )
        except KeyError:
            raise HTTPException(404, f"no report {tracking}") from None
        except LookupError as exc:
            raise HTTPException(422, f"incident_id: {exc}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/v1/reports/{tracking}/link", response_model=reports.Report)
    def link_report(tracking: str, body: LinkBody, request: Request, principal: Decider) -> reports.Report:
        """The report is about an existing incident: link it there and close the report's own incident."""
        report = decide(tracking, principal, body.reason, body.incident_id)
        request.app.state.on_queued()
        return report

    @app.post("/v1/reports/{tracking}/unfounded", response_model=reports.Report)
    def unfounded_report(tracking: str, body: UnfoundedBody, request: Request, principal: Decider) -> reports.Report:
        """Close the report as unfounded, with the reason (its departments are told)."""
        report = decide(tracking, principal, body.reason, None)
        request.app.state.on_queued()
        return report


def _detail(store: TaskStore, incident: dict[str, Any], principal: Principal, routing: Routing, names: Directory):
    tasks = store.list_tasks(incident_id=incident["incident_id"])
    item = board.item(incident, tasks, principal, routing, names)
    item["timeline"] = incident.get("timeline", [])
    item["hazard_ids"] = incident.get("hazard_ids", [])
    item["open_hazard_ids"] = incident.get("open_hazard_ids", [])
    for row in item["tasks"]:
        row["deliveries"] = [d.model_dump() for d in store.deliveries(row["task_id"])]
        row["audit"] = [a.model_dump() for a in store.audit(row["task_id"])]
    item["report"] = None
    if principal.role in DECIDE:  # a report's text and contact are for regulators only
        with store.reading() as db:
            row = db.execute(
                "SELECT tracking FROM reports WHERE incident_id = ?", (incident["incident_id"],)
            ).fetchone()
        report = reports.get_report(store, row["tracking"]) if row else None
        item["report"] = report.model_dump() if report else None
    return item
