"""Maintenance notices in the duty room: one task per notice, through the incident routing tree.

A notice (a site's instrument hazards gathered by the worker) is not an incident: it never comes
from the `incidents` topic and never links hazards. The alert service keeps it the way it keeps a
public report: as an item of its own kind, `maintenance`, routed by the same tree (the shipped
file sends `kinds: [maintenance]` to the enterprise's duty room alone, with long deadlines), one
task per (notice, department), every later notice event appended as a revision, and the tasks
closed by the service when the notice closes: nothing is left to do once every sensor is back.
"""

from __future__ import annotations

from rules.models import IncidentEvent, NoticeEvent, TimelineEntry

KIND = "maintenance"  # what routes match with `kinds: [maintenance]`
RULE_ID = "notice.instrument_health"


def as_item(n: NoticeEvent) -> IncidentEvent:
    """The notice in the shape the task store keeps (its id is the notice's, `NOTICE-…`)."""
    # Timeline entries start with the kind: routing reads an item's kinds from their first word.
    timeline = [
        TimelineEntry(ts=f.since, what=f"{KIND} {f.kind} at {f.sensor_id or 'the site'}", hazard_id=f.hazard_id)
        for f in n.faults
    ] or [TimelineEntry(ts=n.updated_at, what=f"{KIND} all clear")]
    return IncidentEvent(
        incident_id=n.notice_id,
        status=n.status,
        severity=n.severity,
        rule_id=RULE_ID,
        title=n.title,
        summary=n.summary,
        site_id=n.site_id,
        site_name=n.site_name,
        enterprise_id=n.enterprise_id,
        enterprise_name=n.enterprise_name,
        region=n.region,
        sector=n.sector,
        opened_at=n.opened_at,
        updated_at=n.updated_at,
        closed_at=n.closed_at,
        hazard_ids=list(n.hazard_ids),
        open_hazard_ids=[f.hazard_id for f in n.faults],
        timeline=timeline,
    )
