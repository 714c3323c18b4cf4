"""Silences and inhibition on a real store with a clock the test drives: what they hold is on
record, never sent while held, and what is still open is told at once when they end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.escalation import escalate_due
from alerts.routing import RoutingError, load_routing
from alerts.silences import InhibitRule, Matcher, parse_matchers
from alerts.store import TaskStore, task_id_for

from .test_alert_store import MINUTE, T0, incident
from .test_escalation import ROUTING


@pytest.fixture
def store(store_target: Path | str):
    s = TaskStore(store_target)  # a SQLite file, then a PostgreSQL database
    yield s
    s.close()


@pytest.fixture
def routing(tmp_path: Path):
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    return load_routing(path, alerts_api="http://alerts.test")


def at_site(severity: str, site: str, incident_id: str, updated_at: int = T0, status: str = "open"):
    return incident(severity, updated_at, incident_id, status).model_copy(update={"site_id": site})


def test_a_silence_holds_on_record_and_tells_what_is_open_when_it_ends(store, routing):
    silence = store.add_silence(
        Matcher(site_ids=["site-1"]), starts_at=T0, ends_at=T0 + 30 * MINUTE, created_by="Wang", reason="drill", now=T0
    )
    store.record_incident(incident("yellow", T0), ["county", "city"], 5, now=T0 + MINUTE)
    county = task_id_for("inc-a1", "county")
    assert store.unsent() == []  # nothing goes out
    assert [(n.kind, n.held_by) for n in store.held()] == [("task", silence.silence_id)] * 2
    assert store.audit(county)[-1].event == "held" and "silenced by" in store.audit(county)[-1].detail
    assert store.get_task(county).next_escalation_at is None  # nobody was told: no clock
    assert escalate_due(store, routing, T0 + 20 * MINUTE) == []
    store.record_incident(
        incident("orange", T0 + 2 * MINUTE, status="update"), ["county", "city"], 5, now=T0 + 2 * MINUTE
    )
    assert len(store.held()) == 4  # the revision is held too

    assert store.release_held(T0 + 29 * MINUTE) == []  # still in force
    told = store.release_held(T0 + 30 * MINUTE)
    assert sorted(told) == sorted([county, task_id_for("inc-a1", "city")])
    [message] = store.unsent(include_failed=False)[:1]
    assert message.kind == "task" and message.incident["severity"] == "orange"  # its current state, once
    assert "ended: still open, so told now" in message.reason
    assert len(store.unsent()) == 2 and store.held() == []
    superseded = [n for n in store.notifications(county) if n.status == "skipped"]
    assert len(superseded) == 2 and all("superseded" in n.reason for n in superseded)
    assert store.get_task(county).next_escalation_at == T0 + 35 * MINUTE  # its 5 minutes start now


def test_other_sites_and_departments_are_not_held(store):
    store.add_silence(
        Matcher(site_ids=["site-1"], departments=["city"]),
        starts_at=T0,
        ends_at=T0 + 30 * MINUTE,
        created_by="Wang",
        reason="city desk moving",
        now=T0,
    )
    store.record_incident(incident("yellow", T0), ["county", "city"], 5, now=T0)
    store.record_incident(at_site("yellow", "site-2", "inc-b"), ["city"], 5, now=T0)
    assert sorted(n.task_id for n in store.unsent()) == sorted(
        [task_id_for("inc-a1", "county"), task_id_for("inc-b", "city")]
    )
    assert [n.task_id for n in store.held()] == [task_id_for("inc-a1", "city")]


def test_ended_early_and_closed_meanwhile(store):
    silence = store.add_silence(
        Matcher(severities=["yellow", "blue"]),
        starts_at=T0,
        ends_at=T0 + 60 * MINUTE,
        created_by="Li",
        reason="x",
        now=T0,
    )
    store.record_incident(incident("yellow", T0), ["county"], 30, now=T0)
    store.record_incident(at_site("blue", "site-9", "inc-gone"), ["county"], 60, now=T0)
    store.record_incident(at_site("blue", "site-9", "inc-gone", T0 + MINUTE, "closed"), ["county"], 60, now=T0 + MINUTE)
    store.expire_silence(silence.silence_id, now=T0 + 10 * MINUTE)
    with pytest.raises(ValueError, match="ended already"):
        store.expire_silence(silence.silence_id, now=T0 + 11 * MINUTE)
    assert store.release_held(T0 + 10 * MINUTE) == [task_id_for("inc-a1", "county")]
    gone = task_id_for("inc-gone", "county")
    assert "closed meanwhile: nothing to send" in store.audit(gone)[-1].detail
    assert [n.status for n in store.notifications(gone)] == ["skipped", "skipped"]  # on record, not sent
    assert "was ended early" in store.notifications(gone)[0].reason


def test_a_red_incident_inhibits_yellow_and_blue_at_the_same_site(store):
    store.inhibit_rules = [
        InhibitRule(
            source=Matcher(severities=["red"]), target=Matcher(severities=["yellow", "blue"]), equal=["site_id"]
        )
    ]
    store.record_incident(at_site("red", "site-1", "inc-red"), ["county"], 5, now=T0)
    store.record_incident(at_site("yellow", "site-1", "inc-yellow"), ["county"], 30, now=T0 + 1)
    store.record_incident(at_site("yellow", "site-2", "inc-elsewhere"), ["county"], 30, now=T0 + 2)
    assert sorted(n.task_id for n in store.unsent()) == sorted(
        [task_id_for("inc-red", "county"), task_id_for("inc-elsewhere", "county")]
    )
    [held] = store.held()
    assert held.held_by == "incident:inc-red"
    assert "inhibited by open red incident inc-red (equal site_id)" in store.audit(held.task_id)[-1].detail
    assert store.release_held(T0 + MINUTE) == []  # the red one is still open
    store.record_incident(
        at_site("red", "site-1", "inc-red", T0 + 2 * MINUTE, "closed"), ["county"], 5, now=T0 + 2 * MINUTE
    )
    assert store.release_held(T0 + 2 * MINUTE) == [task_id_for("inc-yellow", "county")]
    assert "inhibiting incident inc-red closed" in store.unsent()[-1].reason


def test_scope_incidents_have_no_site_and_inhibit_no_one_by_it(store):
    # Two scope incidents (county, city) both have an empty site_id: that is no site, not "the same site".
    store.inhibit_rules = [
        InhibitRule(
            source=Matcher(severities=["red"]), target=Matcher(severities=["yellow", "blue"]), equal=["site_id"]
        )
    ]
    county = at_site("red", "", "inc-county").model_copy(update={"scope": "county", "scope_key": "320583"})
    city = at_site("yellow", "", "inc-city").model_copy(update={"scope": "city", "scope_key": "320500"})
    store.record_incident(county, ["county"], 5, now=T0)
    store.record_incident(city, ["county"], 30, now=T0 + 1)
    assert store.held() == []
    assert sorted(n.task_id for n in store.unsent()) == sorted(
        [task_id_for("inc-county", "county"), task_id_for("inc-city", "county")]
    )


def test_matchers():
    with pytest.raises(ValidationError, match="at least one matcher"):
        Matcher()
    m = parse_matchers(["site_ids=hz-1,hz-2", "min_severity=orange"])
    assert m.site_ids == ["hz-1", "hz-2"] and m.min_severity == "orange"
    assert m.matches({"site_id": "hz-2", "severity": "red"}) and not m.matches(
        {"site_id": "hz-2", "severity": "yellow"}
    )
    with pytest.raises(ValueError, match="not key=value"):
        parse_matchers(["site_ids"])


def test_inhibit_rules_in_the_routing_file_are_checked(tmp_path: Path):
    path = tmp_path / "routing.yaml"
    path.write_text(
        ROUTING + "inhibit_rules:\n  - source: {severities: [red]}\n    target: {severities: [yellow]}\n"
        "    equal: [site]\n"
    )
    with pytest.raises(RoutingError) as info:
        load_routing(path, alerts_api="http://a")
    assert f"{path}:15: inhibit_rules[0].equal[0]" in str(info.value)


def test_silence_commands(tmp_path: Path):
    env = {**os.environ, "SAFEWATCH_ALERTS_DB": str(tmp_path / "a.sqlite3")}

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "safewatch", "alerts", "silence", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True)

    added = run(
        "add", "site_ids=hz-1", "severities=yellow,blue", "--minutes", "90", "--reason", "calibration", "--by", "Li"
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = run("list")
    assert silence_id in listed.stdout and "calibration" in listed.stdout and '"site_ids":["hz-1"]' in listed.stdout
    assert run("add", "--minutes", "5", "--reason", "x", "--by", "y", "colour=red").returncode != 0
    assert run("expire", silence_id).returncode == 0
    assert silence_id not in run("list").stdout and silence_id in run("list", "--all").stdout
