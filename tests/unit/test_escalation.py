"""Escalation: the chain derived from region codes (pure), and the timer on a real store driven
by a clock the test controls, across a reopening of the store (the service's restart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.escalation import escalate_due
from alerts.routing import escalation_target, load_routing
from alerts.store import TaskStore, task_id_for
from config.settings import PROJECT_ROOT

from .test_alert_store import MINUTE, T0, incident

ROUTING = """\
ack_minutes: {red: 5, orange: 10, yellow: 20, blue: 60}
departments:
  enterprise: {name: Enterprise duty room, webhook: "http://x/e", level: enterprise, region: "32"}
  county: {name: County bureaux, webhook: "http://x/county", level: county, region: "32"}
  suzhou: {name: Suzhou, webhook: "http://x/suzhou", level: city, region: "3205"}
  nanjing: {name: Nanjing, webhook: "http://x/nanjing", level: city, region: "3201"}
  province: {name: Province, webhook: "http://x/province", level: province, region: "32"}
  fire: {name: Fire and rescue, webhook: "http://x/fire"}
routes:
  - {sectors: ["*"], departments: [enterprise, county]}
  - {sectors: ["*"], min_severity: orange, departments: [fire]}
"""


@pytest.fixture
def routing(tmp_path: Path):
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    return load_routing(path, alerts_api="http://alerts.test")


@pytest.fixture
def store(store_target: Path | str):
    s = TaskStore(store_target)  # a SQLite file, then a PostgreSQL database
    yield s
    s.close()


def test_chain_follows_the_region_code(routing):
    assert escalation_target(routing, "enterprise", "320583") == "county"
    assert escalation_target(routing, "county", "320583") == "suzhou"  # Kunshan is in Suzhou (3205)
    assert escalation_target(routing, "county", "320102") == "nanjing"
    assert escalation_target(routing, "suzhou", "320583") == "province"
    assert escalation_target(routing, "province", "320583") is None  # top of the chain
    assert escalation_target(routing, "fire", "320583") == "province"  # outside the chain: to the province


def test_levels_without_a_department_for_the_region_are_skipped(routing):
    # No city department covers Xuzhou (3203): the county escalates straight to the province.
    assert escalation_target(routing, "county", "320324") == "province"
    # Another province altogether: nobody above.
    assert escalation_target(routing, "enterprise", "110105") is None


def test_shipped_routing_has_the_whole_jiangsu_chain():
    routing = load_routing(PROJECT_ROOT / "config" / "routing.yaml", alerts_api="http://a")
    chain, dept = [], "enterprise-duty"
    while dept:
        chain.append(dept)
        dept = escalation_target(routing, dept, "320583")
    assert chain == ["enterprise-duty", "county-emergency", "suzhou-emergency", "js-emergency"]
    assert escalation_target(routing, "js-fire-rescue", "320707") == "js-emergency"


def test_nothing_escalates_before_the_deadline(store, routing):
    store.record_incident(incident("red"), ["enterprise", "county"], 5, now=T0)
    assert escalate_due(store, routing, T0 + 5 * MINUTE - 1) == []
    assert {t.status for t in store.list_tasks()} == {"new"}


def test_unacknowledged_task_climbs_the_chain_until_the_top(store, routing):
    store.record_incident(incident("red"), ["county"], 5, now=T0)  # red: 5 minutes at every level
    county = task_id_for("inc-a1", "county")

    [(escalated, city)] = escalate_due(store, routing, T0 + 5 * MINUTE)
    assert (escalated.task_id, escalated.status, escalated.escalation_level) == (county, "escalated", 1)
    assert escalated.next_escalation_at == T0 + 10 * MINUTE
    assert city.department == "suzhou" and city.ack_deadline == T0 + 10 * MINUTE
    assert [n.kind for n in store.notifications(city.task_id)] == ["escalation"]
    assert "escalated from county: not acknowledged after 5.0 min" in store.notifications(city.task_id)[0].reason
    # The county itself is reminded, with what happened.
    assert [(n.seq, n.kind) for n in store.notifications(county)] == [(0, "task"), (1, "escalation")]
    assert store.audit(county)[-1].actor == "alert service"

    # Five minutes on nobody acted: the county task goes up again, and the city's own task too.
    done = escalate_due(store, routing, T0 + 10 * MINUTE)
    assert {(t.department, t.escalation_level, target and target.department) for t, target in done} == {
        ("county", 2, "province"),
        ("suzhou", 1, "province"),
    }
    province = task_id_for("inc-a1", "province")
    # One province task; the second escalation to it is a second notification, not a second task.
    assert [n.seq for n in store.notifications(province)] == [0, 1]

    # At the top: the province's own deadline passes; it is reminded, and the clock stops there.
    later = T0 + 15 * MINUTE
    done = escalate_due(store, routing, later)
    assert ("province", None) in {(t.department, target) for t, target in done}
    assert store.get_task(province).next_escalation_at is None
    assert "no higher level" in store.audit(province)[-1].detail


def test_acknowledgement_stops_escalation(store, routing):
    store.record_incident(incident("red"), ["enterprise", "county"], 5, now=T0)
    store.acknowledge(task_id_for("inc-a1", "county"), "Wang", now=T0 + 4 * MINUTE)
    [(escalated, target)] = escalate_due(store, routing, T0 + 5 * MINUTE)
    assert escalated.department == "enterprise" and target.department == "county"  # the county has its task
    assert store.get_task(target.task_id).status == "acknowledged"  # still acknowledged, told once more
    assert escalate_due(store, routing, T0 + 60 * MINUTE) != []  # the enterprise's own clock runs on
    store.acknowledge(task_id_for("inc-a1", "enterprise"), "Zhang", now=T0 + 61 * MINUTE)
    assert all(t.department in ("suzhou", "province") for t, _ in escalate_due(store, routing, T0 + 600 * MINUTE))
    assert store.due_escalations(T0 + 600 * MINUTE) == []  # every clock stopped or at the top


def test_a_second_timer_does_not_escalate_twice(store, routing):
    task = store.record_incident(incident("red"), ["county"], 5, now=T0)[0]
    first = store.escalate(task.task_id, "suzhou", 5, now=T0 + 5 * MINUTE, expected_level=0)
    second = store.escalate(task.task_id, "suzhou", 5, now=T0 + 5 * MINUTE, expected_level=0)
    assert first is not None and second is None
    assert len(store.notifications(task_id_for("inc-a1", "suzhou"))) == 1


def test_deadlines_survive_a_restart(store_target: Path | str, routing):
    before = TaskStore(store_target)
    before.record_incident(incident("orange"), ["county"], 10, now=T0)
    before.close()  # the service stops; nothing of the timer is in memory
    after = TaskStore(store_target)
    assert escalate_due(after, routing, T0 + 9 * MINUTE) == []
    [(escalated, target)] = escalate_due(after, routing, T0 + 30 * MINUTE)  # it was down past the deadline
    assert escalated.department == "county" and target.department == "suzhou"
    after.close()
