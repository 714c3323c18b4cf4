"""The alert service's HTTP API: tasks, acknowledgement, stats, metrics and the demo inbox."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from alerts import inbox
from alerts.store import AlreadyAcknowledged, AuditEntry, Delivery, Task, TaskStatus, TaskStore, now_ms
from config.settings import Settings


class AckRequest(BaseModel):
    """Who acknowledges a task, and an optional note."""

    by: str = Field(min_length=1, max_length=200)
    note: str | None = Field(None, max_length=2000)


class TaskDetail(BaseModel):
    """A task with its delivery attempts, its audit trail and its incident's newest event."""

    task: Task
    deliveries: list[Delivery]
    audit: list[AuditEntry]
    latest_incident: dict[str, Any] | None


def create_app(settings: Settings, store: TaskStore) -> FastAPI:
    """The FastAPI app over one task store."""
    app = FastAPI(title="safewatch alerts", summary="Dispatch tasks for incidents, per department")
    inbox.ensure_schema(store)

    # Plain `def` endpoints run in a worker thread, so SQLite's fsync never stalls the consumer.
    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and where the tasks are kept."""
        return {"status": "ok", "db": str(store.path), "routing": str(settings.routing), "time": now_ms()}

    @app.get("/tasks", response_model=list[Task])
    def list_tasks(
        status: TaskStatus | None = None,
        department: str | None = None,
        incident_id: str | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
        offset: int = Query(0, ge=0),
    ) -> list[Task]:
        """Tasks matching every given filter, oldest first."""
        return store.list_tasks(
            status=status, department=department, incident_id=incident_id, limit=limit, offset=offset
        )

    @app.get("/tasks/{task_id}", response_model=TaskDetail)
    def get_task(task_id: str) -> TaskDetail:
        """One task with its deliveries and audit trail."""
        task = store.get_task(task_id)
        if task is None:
            raise HTTPException(404, f"no task {task_id}")
        return TaskDetail(
            task=task,
            deliveries=store.deliveries(task_id),
            audit=store.audit(task_id),
            latest_incident=store.latest_incident(task.incident_id),
        )

    @app.post("/tasks/{task_id}/ack", response_model=Task)
    def acknowledge(task_id: str, ack: AckRequest) -> Task:
        """Acknowledge a task: 404 if unknown, 409 if acknowledged before."""
        try:
            return store.acknowledge(task_id, ack.by, ack.note)
        except KeyError:
            raise HTTPException(404, f"no task {task_id}") from None
        except AlreadyAcknowledged as exc:
            done = exc.task
            raise HTTPException(
                409, f"task {task_id} was acknowledged by {done.acknowledged_by} at {done.acknowledged_at}"
            ) from None

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        """Task counts per department and status, and how many are past their deadline."""
        return store.stats()

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(inbox.inbox_router(store))
    return app
