"""Maintenance notices in the alert service: one low-priority task per notice, never an incident."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.notices import as_item
from alerts.routing import facts_of, load_routing, route
from alerts.service import store_messages
from alerts.store import TaskStore, task_id_for
from config.settings import PROJECT_ROOT
from rules.models import NoticeEvent, NoticeFault

T0 = 1_795_600_000_000


def notice(status: str, t_s: int, faults: list[tuple[str, str]], gathered: int) -> NoticeEvent:
    return NoticeEvent(
        notice_id="NOTICE-0123456789abcdef",
        status=status,
        severity="blue",
        title="Tank farm: instrument maintenance",
        summary="…",
        site_id="hz-zjg-tank01",
        site_name="Tank farm",
        enterprise_id="913205828486022959",
        enterprise_name="Acme",
        region="320582",
        sector="hazchem",
        opened_at=T0,
        updated_at=T0 + t_s * 1000,
        closed_at=T0 + t_s * 1000 if status == "closed" else None,
        faults=[
            NoticeFault(hazard_id=h, sensor_id=s, kind="offline", quantity="temperature", severity="blue", since=T0)
            for h, s in faults
        ],
        hazard_ids=[f"h{i}" for i in range(gathered)],
    )


@pytest.fixture
def routing():
    return load_routing(PROJECT_ROOT / "config" / "routing.yaml", alerts_api="http://127.0.0.1:1")


@pytest.fixture
def store(store_target: Path | str):
    s = TaskStore(store_target)
    yield s
    s.close()


def test_a_notice_routes_as_maintenance_to_the_enterprise_duty_room_alone(routing):
    item = as_item(notice("open", 0, [("h0", "s0")], 1))
    assert facts_of(item).kinds == ("maintenance",)
    assert route(item, routing) == ["enterprise-duty"]


def test_one_task_per_notice_with_its_revisions_closed_when_the_notice_closes(store, routing):
    life = [
        notice("open", 0, [("h0", "s0")], 1),
        notice("update", 60, [("h0", "s0"), ("h1", "s1")], 2),
        notice("closed", 300, [], 2),
    ]
    for n in life:
        store_messages([(True, n.to_json())], routing=routing, store=store)
    (task,) = store.list_tasks()
    assert task.department == "enterprise-duty" and task.incident_id == life[0].notice_id
    assert task.status == "closed" and task.next_escalation_at is None
    sent = [(m.kind, m.incident["status"]) for m in store.notifications(task.task_id)]
    assert sent == [("task", "open"), ("revision", "update"), ("revision", "closed")]
    assert [a.event for a in store.audit(task.task_id)][-1] == "closed"
    # the same messages again (a replay of the topic): nothing new
    for n in life:
        assert store_messages([(True, n.to_json())], routing=routing, store=store) == []
    assert len(store.notifications(task_id_for(life[0].notice_id, "enterprise-duty"))) == 3


def test_a_bad_notice_message_is_skipped(store, routing):
    assert store_messages([(True, b"{oops"), (True, None)], routing=routing, store=store) == []


def test_the_console_lists_an_open_notice_as_maintenance_and_the_wall_leaves_it_out(tmp_path):
    from .test_console import World

    world = World(tmp_path)
    try:
        store_messages(
            [(True, notice("open", 0, [("h0", "s0")], 1).to_json())], routing=world.routing, store=world.store
        )
        items = {i["incident_id"]: i for i in world.get("/v1/board").json()["items"]}
        item = items["NOTICE-0123456789abcdef"]
        assert item["kind"] == "maintenance" and [r["id"] for r in item["rules"]] == ["notice.instrument_health"]
        assert [t["department"] for t in item["tasks"]] == ["enterprise-duty"]
        assert world.get("/v1/wall").json()["open"] == 1  # the red incident only
        store_messages([(True, notice("closed", 60, [], 1).to_json())], routing=world.routing, store=world.store)
        assert "NOTICE-0123456789abcdef" not in {i["incident_id"] for i in world.get("/v1/board").json()["items"]}
    finally:
        world.store.close()
