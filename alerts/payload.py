"""The webhook body a department receives: schema `safewatch.alert/v1` (docs/webhook.md).

Alertmanager-like on the outside (`status` firing/resolved, `labels`, `annotations`) so
generic receivers can route on it, with the dispatch task and the whole incident inside.
"""

from __future__ import annotations

from typing import Any

import orjson

from alerts.store import Notification, Task

SCHEMA = "safewatch.alert/v1"


def webhook_body(notification: Notification, task: Task, api_base: str) -> dict[str, Any]:
    """The v1 body of one notification of one task."""
    incident = notification.incident
    resolved = incident.get("status") == "closed"
    labels = {
        "alertname": incident.get("rule_id", ""),
        "incident_id": task.incident_id,
        "severity": incident.get("severity", task.severity),
        "sector": incident.get("sector", ""),
        "region": incident.get("region", ""),
        "enterprise_id": task.enterprise_id,
        "site_id": incident.get("site_id", ""),
        "department": task.department,
    }
    annotations = {
        "summary": incident.get("title", ""),
        "description": _description(notification, task, incident),
        "task_url": f"{api_base.rstrip('/')}/tasks/{task.task_id}",
    }
    return {
        "schema": SCHEMA,
        "status": "resolved" if resolved else "firing",
        "kind": notification.kind,
        "reason": notification.reason,
        "notification": {"key": notification.key, "seq": notification.seq, "created_at": notification.created_at},
        "labels": labels,
        "annotations": annotations,
        "task": task.model_dump(exclude={"incident"}),
        "incident": incident,
    }


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return orjson.dumps(body)


def _description(notification: Notification, task: Task, incident: dict[str, Any]) -> str:
    where = f"{incident.get('enterprise_name', '')} / {incident.get('site_name', '')} (region {incident.get('region')})"
    head = {"task": "New task", "escalation": "Escalation", "handover": "Handed over", "revision": "Incident update"}[
        notification.kind
    ]
    text = f"{head}: {incident.get('severity', '')} incident at {where}; task {task.status}, acknowledge by deadline"
    return text + (f". {notification.reason}" if notification.reason else "")
