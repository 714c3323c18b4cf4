"""The alert service's HTTP API: tasks and incidents, the task workflow, stats, metrics, tokens.

Every endpoint but `/health` and `/metrics` needs `Authorization: Bearer <token>` (see
alerts/auth.py for the roles). The demo inbox is mounted only when the embedded demo asks for
it (`SAFEWATCH_ALERTS_DEMO_INBOX`). Plain `def` endpoints run in a worker thread, so SQLite
never stalls the event loop that consumes incidents.
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency aliases defined
# inside create_app as objects, and postponed (string) annotations cannot reach those locals.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from alerts import inbox, metrics
from alerts.auth import Principal, TokenInfo, authenticate, list_tokens
from alerts.console.directory import Directory, load_directory
from alerts.console.routes import add_console
from alerts.history_routes import history_router
from alerts.routing import Routing
from alerts.schema import SCHEMA_VERSION
from alerts.silences import Matcher, Silence
from alerts.store import AuditEntry, Delivery, Notification, Task, TaskStatus, TaskStore, TransitionRefused, now_ms
from config.settings import Settings

READ = ("admin", "duty_officer", "inspector", "enterprise")
ACT = ("admin", "duty_officer", "enterprise")  # enterprise: its own enterprise-level tasks only
OVERVIEW = ("admin", "duty_officer", "inspector")  # figures across every enterprise
ADMIN = ("admin",)
Text = Annotated[str, Field(min_length=1, max_length=2000)]


class NoteBody(BaseModel):
    """An optional note with a step (acknowledge, resolve, close)."""

    note: Text | None = None


class NoteText(BaseModel):
    """A note on a task's trail."""

    text: Text


class AssignBody(BaseModel):
    """The person who takes the task on."""

    person: Annotated[str, Field(min_length=1, max_length=200)]


class HandoverBody(BaseModel):
    """The department the task is handed to, and why."""

    department: Annotated[str, Field(min_length=1, max_length=64)]
    note: Text | None = None


class SilenceBody(BaseModel):
    """A new silence: what it matches, when (default from now), for how long or until when, why."""

    matcher: Matcher
    starts_at: int | None = None
    ends_at: int | None = None
    minutes: float | None = Field(None, gt=0, le=60 * 24 * 31)
    reason: Text


class TaskDetail(BaseModel):
    """A task with its notifications, delivery attempts, audit trail and its incident's newest event."""

    task: Task
    notifications: list[Notification]
    deliveries: list[Delivery]
    audit: list[AuditEntry]
    latest_incident: dict[str, Any] | None


class Handover(BaseModel):
    """The task handed over, and the receiving department's task."""

    task: Task
    handed_to: Task


def create_app(
    settings: Settings, store: TaskStore, routing: Callable[[], Routing], names: Directory | None = None
) -> FastAPI:
    """The FastAPI app over one task store; `routing()` gives the routing in force, `names` the
    registry's and catalogue's names for the console (read from the settings' files if not given)."""
    # FastAPIOffline serves Swagger UI and ReDoc from files in the package: no CDN, so the docs
    # open on a duty room's network that has no way out.
    app = FastAPIOffline(title="safewatch alerts", summary="Dispatch tasks for incidents, per department")
    bearer = HTTPBearer(auto_error=False, description="an API token from `safewatch alerts token issue`")

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        principal = authenticate(store, credentials.credentials) if credentials is not None else None
        if principal is None:
            metrics.AUTH_REFUSED.labels("401").inc()
            # Never echo what was sent: it may be a secret typed into the wrong place.
            raise HTTPException(401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"})
        return principal

    def role(*allowed: str) -> Callable[[Principal], Principal]:
        def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
            if principal.role not in allowed:
                refuse(f"role {principal.role} may not do this")
            return principal

        return check

    def source(request: Request, principal: Principal) -> str:
        """From where: the client address and the token (by id, never its secret)."""
        host = request.client.host if request.client else "unknown"
        return f"{host} token {principal.token_id}"

    def visible_task(task_id: str, principal: Principal) -> Task:
        task = store.get_task(task_id)
        if task is None:
            raise HTTPException(404, f"no task {task_id}")
        if principal.role == "enterprise" and task.enterprise_id != principal.enterprise_id:
            refuse("this task belongs to another enterprise")
        return task

    def actionable_task(task_id: str, principal: Principal) -> Task:
        task = visible_task(task_id, principal)
        if principal.role == "enterprise":
            department = routing().departments.get(task.department)
            if department is None or department.level != "enterprise":
                refuse("an enterprise operator acts only on its enterprise's own tasks, not a regulator's")
        return task

    def step(action: Callable[[], Task]) -> Task:
        try:
            return action()
        except KeyError:
            raise HTTPException(404, "no such task") from None
        except TransitionRefused as exc:
            raise HTTPException(409, str(exc)) from None

    Reader = Annotated[Principal, Depends(role(*READ))]
    Actor = Annotated[Principal, Depends(role(*ACT))]

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and the store's schema version (no credentials, no addresses)."""
        return {
            "status": "ok",
            "schema_version": SCHEMA_VERSION,
            "demo_inbox": settings.alerts_demo_inbox,
            "time": now_ms(),
        }

    @app.get("/tasks", response_model=list[Task])
    def list_tasks(
        principal: Reader,
        status: TaskStatus | None = None,
        department: str | None = None,
        incident_id: str | None = None,
        enterprise_id: str | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
        offset: int = Query(0, ge=0),
    ) -> list[Task]:
        """Tasks matching every given filter, oldest first (an enterprise sees only its own)."""
        if principal.role == "enterprise":
            if enterprise_id not in (None, principal.enterprise_id):
                refuse("an enterprise operator sees only its own enterprise")
            enterprise_id = principal.enterprise_id
        return store.list_tasks(
            status=status,
            department=department,
            incident_id=incident_id,
            enterprise_id=enterprise_id,
            limit=limit,
            offset=offset,
        )

    @app.get("/tasks/{task_id}", response_model=TaskDetail)
    def get_task(task_id: str, principal: Reader) -> TaskDetail:
        """One task with its notifications, deliveries and audit trail."""
        task = visible_task(task_id, principal)
        return TaskDetail(
            task=task,
            notifications=store.notifications(task_id),
            deliveries=store.deliveries(task_id),
            audit=store.audit(task_id),
            latest_incident=store.latest_incident(task.incident_id),
        )

    @app.get("/incidents")
    def list_incidents(
        principal: Reader,
        enterprise_id: str | None = None,
        status: str | None = Query(None, pattern="^(open|update|closed)$"),
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        """The newest event of each incident, newest first (an enterprise sees only its own)."""
        if principal.role == "enterprise":
            if enterprise_id not in (None, principal.enterprise_id):
                refuse("an enterprise operator sees only its own enterprise")
            enterprise_id = principal.enterprise_id
        return store.list_incidents(enterprise_id=enterprise_id, status=status, limit=limit, offset=offset)

    @app.get("/incidents/{incident_id}")
    def get_incident(incident_id: str, principal: Reader) -> dict[str, Any]:
        """An incident's newest event and its tasks."""
        incident = store.latest_incident(incident_id)
        if incident is None:
            raise HTTPException(404, f"no incident {incident_id}")
        if principal.role == "enterprise" and incident.get("enterprise_id") != principal.enterprise_id:
            refuse("this incident belongs to another enterprise")
        return {"incident": incident, "tasks": store.list_tasks(incident_id=incident_id)}

    @app.post("/tasks/{task_id}/ack", response_model=Task)
    def acknowledge(task_id: str, body: NoteBody, request: Request, principal: Actor) -> Task:
        """Acknowledge a task (stops its escalation): 409 if acknowledged before."""
        actionable_task(task_id, principal)
        return step(lambda: store.acknowledge(task_id, principal.name, body.note, source(request, principal)))

    @app.post("/tasks/{task_id}/assign", response_model=Task)
    def assign(task_id: str, body: AssignBody, request: Request, principal: Actor) -> Task:
        """Give an acknowledged task to a person (→ in_progress)."""
        actionable_task(task_id, principal)
        return step(lambda: store.assign(task_id, body.person, principal.name, source(request, principal)))

    @app.post("/tasks/{task_id}/handover", response_model=Handover)
    def hand_over(task_id: str, body: HandoverBody, request: Request, principal: Actor) -> Handover:
        """Hand an acknowledged task to another department, which gets its own task (and is notified)."""
        task = actionable_task(task_id, principal)
        current = routing()
        if body.department not in current.departments:
            raise HTTPException(422, f"department {body.department!r} is not in the routing file")
        minutes = current.ack_minutes_for((store.latest_incident(task.incident_id) or task.incident)["severity"])
        try:
            mine, theirs = store.hand_over(
                task_id, body.department, minutes, principal.name, source(request, principal), body.note
            )
        except TransitionRefused as exc:
            raise HTTPException(409, str(exc)) from None
        request.app.state.on_queued()
        return Handover(task=mine, handed_to=theirs)

    @app.post("/tasks/{task_id}/notes", response_model=Task)
    def add_note(task_id: str, body: NoteText, request: Request, principal: Actor) -> Task:
        """Add a note to the task's trail."""
        actionable_task(task_id, principal)
        return step(lambda: store.add_note(task_id, body.text, principal.name, source(request, principal)))

    @app.post("/tasks/{task_id}/resolve", response_model=Task)
    def resolve(task_id: str, body: NoteBody, request: Request, principal: Actor) -> Task:
        """The department has dealt with it (acknowledged/in_progress → resolved)."""
        actionable_task(task_id, principal)
        return step(lambda: store.resolve(task_id, principal.name, body.note, source(request, principal)))

    @app.post("/tasks/{task_id}/close", response_model=Task)
    def close(task_id: str, body: NoteBody, request: Request, principal: Actor) -> Task:
        """Close a resolved task."""
        actionable_task(task_id, principal)
        return step(lambda: store.close_task(task_id, principal.name, body.note, source(request, principal)))

    @app.get("/stats")
    def stats(principal: Annotated[Principal, Depends(role(*OVERVIEW))]) -> dict[str, Any]:
        """Task counts per department and status, how many are overdue, how many notifications wait."""
        return store.stats()

    @app.get("/silences", response_model=list[Silence])
    def list_silences(principal: Annotated[Principal, Depends(role(*OVERVIEW))], active: bool = False) -> list[Silence]:
        """Every silence, newest first (`active=true`: only those in force now)."""
        return store.silences(active_at=now_ms() if active else None)

    @app.post("/silences", response_model=Silence, status_code=201)
    def add_silence(
        body: SilenceBody, principal: Annotated[Principal, Depends(role("admin", "duty_officer"))]
    ) -> Silence:
        """Hold back matching messages for a while; they are recorded, and what is still open is
        told when the silence ends."""
        now = now_ms()
        starts = body.starts_at if body.starts_at is not None else now
        if (body.ends_at is None) == (body.minutes is None):
            raise HTTPException(422, "give ends_at or minutes (exactly one)")
        ends = body.ends_at if body.ends_at is not None else starts + round((body.minutes or 0) * 60_000)
        try:
            return store.add_silence(
                body.matcher, starts_at=starts, ends_at=ends, created_by=principal.name, reason=body.reason, now=now
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.delete("/silences/{silence_id}", response_model=Silence)
    def expire_silence(
        silence_id: str, principal: Annotated[Principal, Depends(role("admin", "duty_officer"))]
    ) -> Silence:
        """End a silence now; what it held is told at the next tick (about a second)."""
        try:
            return store.expire_silence(silence_id)
        except KeyError:
            raise HTTPException(404, f"no silence {silence_id}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/tokens", response_model=list[TokenInfo])
    def tokens(principal: Annotated[Principal, Depends(role(*ADMIN))]) -> list[TokenInfo]:
        """Every token issued (id, holder, role; never the secret)."""
        return list_tokens(store)

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.state.on_queued = lambda: None  # the service sets it: new notifications to send
    names = (
        names if names is not None else load_directory(settings.registry, settings.rules_dir, settings.correlation_dir)
    )
    add_console(app, settings, store, routing, names, role, refuse, READ, OVERVIEW)
    app.include_router(history_router(settings, store))
    if settings.alerts_demo_inbox:
        inbox.ensure_schema(store)
        app.include_router(inbox.inbox_router(store))
    return app


def refuse(why: str) -> None:
    """403, counted."""
    metrics.AUTH_REFUSED.labels("403").inc()
    raise HTTPException(403, why)
