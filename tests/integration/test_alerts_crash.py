"""The alert service SIGKILLed in the middle of its deliveries: every message the outbox
accepted is sent after the restart (0 lost); every POST a department received is on record as an
attempt (the attempt row is written before the POST); a message arrives twice only when the kill
cut its attempt short, and then with the same Idempotency-Key (0 duplicates after the receiver's
de-duplication)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import httpx

from alerts.store import IN_FLIGHT
from config.topics import NOTICES_TOPIC

from .pipeline_helpers import read_topic, spawn, stop, wait_until
from .test_alerts import Receiver, alerts_settings, api_headers, expected_tasks


def test_sigkill_during_delivery_loses_nothing_and_records_every_attempt(leak_run, tmp_path, store_target):
    receiver = Receiver(delay_s=2.0)  # slow to answer, so the kill lands while POSTs are open
    try:
        settings = alerts_settings(leak_run, tmp_path, receiver, f"it-alerts-kill-{uuid.uuid4().hex[:6]}", store_target)
        settings = settings.model_copy(update={"alerts_redeliver_s": 2.0})
        # The service reads the notices topic too: one maintenance task per notice of the leak run.
        notices = asyncio.run(read_topic(settings, NOTICES_TOPIC, until=lambda m: True, settle=0.5))
        closed_notices = {n["notice_id"] for n in notices if n["status"] == "closed"}
        want = expected_tasks(leak_run, settings, notices)
        headers = api_headers(settings)
        proc = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
        wait_until(lambda: len(receiver.received) >= 1, 90, "a first delivery to be under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        in_flight_at_kill = len(receiver.received)
        proc = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
        try:

            def outbox_empty() -> bool:
                try:
                    stats = httpx.get(f"{settings.alerts_api}/stats", headers=headers, timeout=5).json()
                except httpx.HTTPError:
                    return False
                return stats["tasks"] == len(want) and stats["outbox_unsent"] == 0

            wait_until(outbox_empty, 120, f"{len(want)} tasks and every queued message sent after the restart")
            tasks = httpx.get(f"{settings.alerts_api}/tasks", headers=headers, timeout=5).json()
            assert {(t["incident_id"], t["department"]) for t in tasks} == want
            # A notice's task is closed by the service when the notice closes; the rest are delivered.
            assert {t["status"] for t in tasks if t["incident_id"] not in closed_notices} == {"delivered"}
            received = Counter(key for _, key, _ in receiver.received)
            queued, lost, repeats, known = 0, [], 0, set()
            for t in tasks:
                detail = httpx.get(f"{settings.alerts_api}/tasks/{t['task_id']}", headers=headers, timeout=5).json()
                cut_short = Counter(d["notification_id"] for d in detail["deliveries"] if d["error"] == IN_FLIGHT)
                attempts = Counter(d["notification_id"] for d in detail["deliveries"])
                for n in detail["notifications"]:
                    queued += 1
                    key = f"{t['task_id']}:{n['channel']}:{n['seq']}"
                    known.add(key)
                    # A message of a task closed before it went out is skipped on record, not lost.
                    skipped = n["status"] == "skipped" and t["incident_id"] in closed_notices
                    if not skipped and (n["status"] != "sent" or received[key] == 0):
                        lost.append(key)
                    # Every POST received is on record as an attempt (the row is written first) …
                    assert received[key] <= attempts[n["id"]], (key, received[key], attempts[n["id"]])
                    # … and a key arrives twice only when the kill cut an attempt of it short.
                    assert received[key] <= 1 + cut_short[n["id"]], (key, received[key], cut_short[n["id"]])
                    repeats += max(0, received[key] - 1)
            assert lost == []
            assert set(received) <= known  # nothing was sent that the outbox does not hold
            print(
                f"\nalert service kill ({'postgresql' if settings.alerts_db_url else 'sqlite'}): {len(want)} tasks,"
                f" {queued} messages queued, {in_flight_at_kill} POST(s)"
                f" open at the kill, {sum(received.values())} POSTs received: 0 lost, {repeats} repeat(s) of an"
                f" attempt the kill cut short (same Idempotency-Key), 0 other duplicates"
            )
        finally:
            stop(proc)
    finally:
        receiver.close()
