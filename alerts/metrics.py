"""Prometheus counters of the alert service, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter

INCIDENTS = Counter("safewatch_alerts_incidents_total", "Incident events read and stored")
BAD_INCIDENTS = Counter("safewatch_alerts_bad_incidents_total", "Incident messages skipped as unreadable", ["reason"])
NOTICES = Counter("safewatch_alerts_notices_total", "Maintenance notice events read and stored")
UNROUTED = Counter("safewatch_alerts_unrouted_incidents_total", "Incident events that matched no route")
TASKS_CREATED = Counter("safewatch_alerts_tasks_created_total", "Dispatch tasks created", ["department", "severity"])
DELIVERY_ATTEMPTS = Counter(
    "safewatch_alerts_delivery_attempts_total", "HTTP delivery attempts", ["department", "outcome"]
)
DELIVERIES = Counter(
    "safewatch_alerts_deliveries_total", "Deliveries finished, delivered or failed", ["department", "result"]
)
INBOX_DUPLICATES = Counter(
    "safewatch_alerts_inbox_duplicates_total", "Demo inbox posts repeated with a seen Idempotency-Key", ["department"]
)
ESCALATIONS = Counter(
    "safewatch_alerts_escalations_total", "Tasks escalated for want of an acknowledgement", ["department", "to"]
)
AUTH_REFUSED = Counter("safewatch_alerts_auth_refused_total", "API requests refused", ["status"])
