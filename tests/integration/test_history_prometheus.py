"""The platform dashboard's PromQL against a real Prometheus (Debian's) scraping a real worker and alert service."""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess
import time
import uuid

import httpx
import pytest

from history.dashboards import queries

from .pipeline_helpers import metric, produce, spawn, stop, wait_for
from .scenario import isolated, simulate
from .test_alerts import Receiver, alerts_settings

PROMQL = [q for q in queries() if q.kind == "promql"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio(loop_scope="session")
async def test_every_platform_panel_returns_data_from_a_real_prometheus(stack, leak_run, tmp_path):
    assert shutil.which("prometheus"), "`safewatch stack install` (make setup) installs Debian's prometheus"
    receiver = Receiver()
    alerts = alerts_settings(leak_run, tmp_path, receiver, f"it-prom-{uuid.uuid4().hex[:6]}")
    worker_settings = await isolated(stack, worker_web_port=_port())
    prom_port = _port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: worker, static_configs: [{{targets: ['127.0.0.1:{worker_settings.worker_web_port}']}}]}}\n"
        f"  - {{job_name: alerts, static_configs: [{{targets: ['127.0.0.1:{alerts.alerts_port}']}}]}}\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115  (the child keeps it)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = spawn(worker_settings, tmp_path / "worker.log", "worker")
    service = spawn(alerts, tmp_path / "alerts.log", "alerts", "serve")
    base = f"http://127.0.0.1:{prom_port}"
    try:

        async def up() -> bool:
            try:
                async with httpx.AsyncClient(timeout=5) as c:
                    resp = await c.get(f"{base}/api/v1/query", params={"query": "sum(up)"})
            except httpx.HTTPError:
                return False  # Prometheus itself still starting
            if resp.status_code != 200:
                return False  # listening, but its storage not open yet: "503 Service Unavailable", not JSON
            r = resp.json()
            return bool(r["data"]["result"]) and float(r["data"]["result"][0]["value"][1]) == 2

        # Scraping before the work starts: rate() needs samples from before and after it, or a
        # run that is over before the first scrape leaves every counter flat (and the quantiles NaN).
        await wait_for(up, 60, "Prometheus scraping the worker and the alert service")
        await asyncio.sleep(3)
        msgs = simulate(leak_run.registry, int(time.time() * 1000) - 1_800_000)
        await produce(worker_settings, msgs)
        await wait_for(
            lambda: metric(worker_settings, "safewatch_messages_total"), 120, "the worker", at_least=len(msgs)
        )
        await wait_for(lambda: len(receiver.received), 90, "alert deliveries", at_least=1)
        await asyncio.sleep(6)  # several scrapes after the work, so rate() has two points that differ
        async with httpx.AsyncClient(timeout=10) as c:
            for q in PROMQL:
                body = (await c.get(f"{base}/api/v1/query", params={"query": q.text})).json()
                assert body["status"] == "success", (q.panel, q.text, body)
                values = [float(r["value"][1]) for r in body["data"]["result"]]
                assert values and any(not math.isnan(v) for v in values), f"{q.panel}: {q.text} returned no data"
    finally:
        stop(worker)
        stop(service)
        stop(prom)
        receiver.close()
