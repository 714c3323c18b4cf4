"""What the console and the wall show: open incidents with their tasks and names, counts, latest events.

Plain functions over the task store; the caller passes who is looking (an enterprise operator sees
only its own enterprise) and the routing in force (department names and levels).
"""

from __future__ import annotations

from typing import Any

import orjson

from alerts.auth import Principal
from alerts.console.directory import Directory
from alerts.notices import RULE_ID as NOTICE_RULE
from alerts.routing import Routing
from alerts.store import UNACKNOWLEDGED, Task, TaskStore
from rules.models import SEVERITY_RANK

FINISHED = ("resolved", "closed")
LEVELS = {"enterprise": 0, "county": 1, "city": 2, "province": 3}  # departments outside the chain come last
MAX_ITEMS = 500


def open_incidents(store: TaskStore, enterprise_id: str | None = None, limit: int = MAX_ITEMS) -> list[dict[str, Any]]:
    """Incidents not closed, or closed with a task still to finish, newest change first."""
    where = "(status != 'closed' OR incident_id IN (SELECT incident_id FROM tasks WHERE status NOT IN (?, ?)))"
    args: list[Any] = list(FINISHED)
    if enterprise_id is not None:
        where += " AND enterprise_id = ?"
        args.append(enterprise_id)
    with store.reading() as db:
        rows = db.execute(
            f"SELECT incident_json FROM incidents WHERE {where} ORDER BY updated_at DESC LIMIT ?", (*args, limit)
        ).fetchall()
    return [orjson.loads(r["incident_json"]) for r in rows]


def may_act(principal: Principal, task: Task, routing: Routing) -> bool:
    """Whether this caller may act on this task (the API's rule, shown as enabled buttons)."""
    if principal.role in ("admin", "duty_officer"):
        return True
    if principal.role == "enterprise" and task.enterprise_id == principal.enterprise_id:
        department = routing.departments.get(task.department)
        return department is not None and department.level == "enterprise"
    return False


def task_row(task: Task, principal: Principal, routing: Routing) -> dict[str, Any]:
    """A task as the console lists it."""
    department = routing.departments.get(task.department)
    return {
        "task_id": task.task_id,
        "department": task.department,
        "department_name": department.name if department else task.department,
        "status": task.status,
        "delivery_status": task.delivery_status,
        "ack_deadline": task.ack_deadline,
        "escalation_level": task.escalation_level,
        "acknowledged_by": task.acknowledged_by,
        "acknowledged_at": task.acknowledged_at,
        "assignee": task.assignee,
        "may_act": may_act(principal, task, routing),
    }


def item(incident: dict[str, Any], tasks: list[Task], principal: Principal, routing: Routing, names: Directory):
    """One incident with names, rule texts and its tasks."""
    waiting = [t.ack_deadline for t in tasks if t.status in UNACKNOWLEDGED]
    enterprise_id = incident.get("enterprise_id", "")
    enterprise_name = incident.get("enterprise_name") or ""
    if names.registry and enterprise_id in names.registry.enterprises:
        enterprise_name = names.registry.enterprises[enterprise_id].name
    return {
        "incident_id": incident["incident_id"],
        "kind": _kind(incident.get("rule_id")),
        "severity": incident["severity"],
        "status": incident["status"],
        # Hazards all cleared, not yet resolved (the engine waits a quiet period before `closed`).
        "all_clear": incident["status"] != "closed"
        and bool(incident.get("hazard_ids"))
        and not incident.get("open_hazard_ids"),
        "title": incident.get("title", ""),
        "summary": incident.get("summary", ""),
        "opened_at": incident["opened_at"],
        "updated_at": incident["updated_at"],
        "closed_at": incident.get("closed_at"),
        "site": {"id": incident.get("site_id", ""), "name": incident.get("site_name", "")},
        "enterprise": {"id": enterprise_id, "name": enterprise_name},
        "region": names.region(incident.get("region", "")),
        "sector": names.sector(incident.get("sector", "")),
        "rules": names.hazard_rules(incident),
        "next_deadline": min(waiting) if waiting else None,
        "tasks": [task_row(t, principal, routing) for t in sorted(tasks, key=lambda t: chain_order(t, routing))],
    }


def _kind(rule_id: str | None) -> str:
    return "report" if rule_id == "report.public" else "maintenance" if rule_id == NOTICE_RULE else "sensor"


def chain_order(task: Task, routing: Routing) -> tuple[int, str]:
    """Tasks listed up the reporting chain: enterprise, county, city, province, then the others."""
    department = routing.departments.get(task.department)
    level = department.level if department else None
    return LEVELS.get(level or "", len(LEVELS)), task.department


def board(store: TaskStore, principal: Principal, routing: Routing, names: Directory) -> list[dict[str, Any]]:
    """The console's list: open incidents, worst first, then newest."""
    own = principal.enterprise_id if principal.role == "enterprise" else None
    incidents = open_incidents(store, own)
    items = [
        item(inc, store.list_tasks(incident_id=inc["incident_id"]), principal, routing, names) for inc in incidents
    ]
    items.sort(key=lambda i: (-SEVERITY_RANK.get(i["severity"], 0), -i["opened_at"]))
    return items


def latest_events(store: TaskStore, enterprise_id: str | None = None, after: int = 0, limit: int = 20) -> list[dict]:
    """The newest task events (audit rows), newest first, with their incident's title and severity."""
    where, args = "a.id > ?", list[Any]([after])
    if enterprise_id is not None:
        where += " AND t.enterprise_id = ?"
        args.append(enterprise_id)
    with store.reading() as db:
        rows = db.execute(
            "SELECT a.id, a.task_id, a.at, a.event, a.to_status, a.actor, a.detail, t.department, t.incident_id,"
            " i.severity, json_extract(i.incident_json, '$.title') AS title,"
            " json_extract(i.incident_json, '$.site_name') AS site_name,"
            " json_extract(i.incident_json, '$.rule_id') AS rule_id"
            " FROM audit a JOIN tasks t ON t.task_id = a.task_id LEFT JOIN incidents i ON i.incident_id = t.incident_id"
            f" WHERE {where} ORDER BY a.id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
    return [dict(r) for r in rows]


def wall(store: TaskStore, principal: Principal, routing: Routing, names: Directory) -> dict[str, Any]:
    """The wall view: open incidents counted by city and sector, red/orange ones, risk by enterprise, latest events."""
    # The wall shows incidents: maintenance notices are the duty room's work list, not the province's picture.
    items = [i for i in board(store, principal, routing, names) if i["kind"] != "maintenance"]
    by_region: dict[str, dict[str, Any]] = {}
    by_sector: dict[str, dict[str, Any]] = {}
    risk: dict[str, dict[str, Any]] = {}
    for i in items:
        city = i["region"]["city"] or i["region"]["name"]
        for table, key, label in (
            (by_region, city, {"zh": city, "en": city}),
            (by_sector, i["sector"]["id"], i["sector"]),
        ):
            row = table.setdefault(
                key, {"key": key, "label": label, "total": 0, "red": 0, "orange": 0, "yellow": 0, "blue": 0}
            )
            row["total"] += 1
            row[i["severity"]] += 1
        ent = i["enterprise"]
        if ent["id"]:
            worst = risk.get(ent["id"])
            if worst is None or SEVERITY_RANK[i["severity"]] > SEVERITY_RANK[worst["severity"]]:
                risk[ent["id"]] = {
                    "id": ent["id"],
                    "name": ent["name"],
                    "severity": i["severity"],
                    "region": i["region"]["name"],
                }
    own = principal.enterprise_id if principal.role == "enterprise" else None
    return {
        "open": len(items),
        "by_severity": {s: sum(1 for i in items if i["severity"] == s) for s in ("red", "orange", "yellow", "blue")},
        "by_region": sorted(by_region.values(), key=lambda r: -r["total"]),
        "by_sector": sorted(by_sector.values(), key=lambda r: -r["total"]),
        "severe": [i for i in items if i["severity"] in ("red", "orange")],
        "enterprises": sorted(risk.values(), key=lambda r: -SEVERITY_RANK[r["severity"]]),
        "events": grouped(latest_events(store, own, limit=100), routing)[:12],
    }


def grouped(events: list[dict[str, Any]], routing: Routing) -> list[dict[str, Any]]:
    """One line per (incident, event, new status), newest first, naming every department it happened to:
    an incident routed to eight departments is one line on the wall, not eight."""
    lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        key = (e["incident_id"], e["event"], e["to_status"])
        department = routing.departments.get(e["department"])
        name = department.name if department else e["department"]
        if key in lines:
            lines[key]["departments"].append(name)
        else:
            lines[key] = {**e, "departments": [name]}
    return list(lines.values())
