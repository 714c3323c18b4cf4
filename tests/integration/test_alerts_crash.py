"""The alert service SIGKILLed in the middle of its deliveries: no task lost, and every POST a
department received is on record as an attempt (the attempt row is written before the POST)."""

from __future__ import annotations

import signal
import uuid
from collections import Counter

import httpx

from .pipeline_helpers import spawn, stop, wait_until
from .test_alerts import Receiver, alerts_settings, api_headers, expected_tasks


def test_sigkill_during_delivery_loses_nothing_and_records_every_attempt(leak_run, tmp_path):
    receiver = Receiver(delay_s=2.0)  # slow to answer, so the kill lands while POSTs are open
    try:
        settings = alerts_settings(leak_run, tmp_path, receiver, f"it-alerts-kill-{uuid.uuid4().hex[:6]}")
        settings = settings.model_copy(update={"alerts_redeliver_s": 2.0})
        want = expected_tasks(leak_run, settings)
        headers = api_headers(settings)
        proc = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
        wait_until(lambda: len(receiver.received) >= 1, 90, "a first delivery to be under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        in_flight_at_kill = len(receiver.received)
        proc = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
        try:

            def all_delivered() -> bool:
                try:
                    tasks = httpx.get(f"{settings.alerts_api}/tasks", headers=headers, timeout=5).json()
                except httpx.HTTPError:
                    return False
                return len(tasks) == len(want) and {t["status"] for t in tasks} == {"delivered"}

            wait_until(all_delivered, 120, f"{len(want)} tasks delivered after the restart")
            tasks = httpx.get(f"{settings.alerts_api}/tasks", headers=headers, timeout=5).json()
            assert {(t["incident_id"], t["department"]) for t in tasks} == want
            posts = Counter(body["task"]["task_id"] for _, _, body in receiver.received)
            assert set(posts) == {t["task_id"] for t in tasks}
            for t in tasks:
                detail = httpx.get(f"{settings.alerts_api}/tasks/{t['task_id']}", headers=headers, timeout=5).json()
                attempts = detail["deliveries"]
                assert posts[t["task_id"]] <= len(attempts), (t["task_id"], posts[t["task_id"]], attempts)
            print(
                f"\nalert service kill: {len(want)} tasks, {in_flight_at_kill} POST(s) open at the kill, "
                f"{sum(posts.values())} POSTs received in all, every one recorded"
            )
        finally:
            stop(proc)
    finally:
        receiver.close()
