"""Escalation across a SIGKILL of the alert service: the deadlines are in the store, so a task
nobody acknowledged while the service was down escalates right after it starts again, and an
acknowledged one never does. Real broker, real service processes, a real HTTP receiver."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter

import httpx

from alerts.routing import escalation_target, load_routing
from alerts.store import TaskStore

from .pipeline_helpers import spawn, stop, wait_until
from .test_alerts import Receiver, alerts_settings, api_headers, expected_tasks

ACK_S = 8  # every colour's acknowledge deadline in this test


def test_escalation_survives_a_restart_and_stops_on_acknowledgement(leak_run, tmp_path, store_target):
    receiver = Receiver()
    try:
        settings = alerts_settings(leak_run, tmp_path, receiver, f"it-alerts-esc-{uuid.uuid4().hex[:6]}", store_target)
        text = settings.routing.read_text()
        minutes = ACK_S / 60
        text = text.replace(
            "  red: 5\n  orange: 15\n  yellow: 30\n  blue: 60\n",
            "".join(f"  {c}: {minutes}\n" for c in ("red", "orange", "yellow", "blue")),
        )
        assert f"red: {minutes}" in text
        settings.routing.write_text(text)
        settings = settings.model_copy(update={"alerts_escalation_tick_s": 0.5})
        routing = load_routing(settings.routing, alerts_api=settings.alerts_api)
        want = expected_tasks(leak_run, settings)
        headers = api_headers(settings)
        log = tmp_path / "alerts.log"

        proc = spawn(settings, log, "alerts", "serve")
        wait_until(lambda: len(receiver.received) >= len(want), 90, f"{len(want)} first notifications")
        # The incidents' tasks; the leak run's maintenance notices (NOTICE-…) have their own tests.
        tasks = [
            t
            for t in httpx.get(f"{settings.alerts_api}/tasks", headers=headers, timeout=5).json()
            if not t["incident_id"].startswith("NOTICE-")
        ]
        acked = next(t for t in tasks if t["department"] == "enterprise-duty")
        r = httpx.post(f"{settings.alerts_api}/tasks/{acked['task_id']}/ack", json={"note": "on it"}, headers=headers)
        assert r.status_code == 200
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        # Down past every deadline: no timer runs anywhere now.
        store = TaskStore(settings.alerts_store)
        # (the maintenance route keeps its own, hours-long deadlines: not waited for here)
        latest = max(t.next_escalation_at or 0 for t in store.list_tasks() if not t.incident_id.startswith("NOTICE-"))
        store.close()
        time.sleep(max(0.0, latest / 1000 - time.time()) + 1)
        escalations_before = [b for _, _, b in receiver.received if b["kind"] == "escalation"]
        assert escalations_before == []

        started = time.monotonic()
        proc = spawn(settings, log, "alerts", "serve")
        try:
            originals = {t["task_id"]: t for t in tasks if t["task_id"] != acked["task_id"]}

            def reminded() -> set[str]:
                return {b["task"]["task_id"] for _, _, b in receiver.received if b["kind"] == "escalation"}

            wait_until(lambda: set(originals) <= reminded(), 30, "every unacknowledged task escalated")
            took = time.monotonic() - started
            received = list(receiver.received)
            keys = Counter(key for _, key, _ in received)
            assert max(keys.values()) == 1, "a notification was sent twice"
            assert acked["task_id"] not in reminded()
            for task_id, t in originals.items():
                detail = httpx.get(f"{settings.alerts_api}/tasks/{task_id}", headers=headers, timeout=5).json()
                escalated = [a for a in detail["audit"] if a["event"] == "escalated"]
                assert escalated and escalated[0]["actor"] == "alert service"
                target = escalation_target(routing, t["department"], t["incident"]["region"])
                if target is not None:
                    assert f"escalated to {target}" in escalated[0]["detail"]
            # The enterprise duty room acknowledged; its county (next level) must not hear of it
            # as an escalation from the enterprise.
            from_enterprise = [
                b
                for _, _, b in received
                if b["kind"] == "escalation"
                and b["task"]["incident_id"] == acked["incident_id"]
                and "from enterprise-duty" in (b["reason"] or "")
            ]
            assert from_enterprise == []
            print(f"\nescalation after restart: {len(originals)} tasks escalated {took:.1f} s after the start")
        finally:
            stop(proc)
    finally:
        receiver.close()
