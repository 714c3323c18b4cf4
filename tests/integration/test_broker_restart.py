"""A broker stopped for a minute and started again changes nothing a duty officer sees.

Runs on the durable embedded profile: Tansu with s3 storage, its topics in an S3 server beside
it, so they outlive the broker (with memory storage every topic would be gone). While the broker
is away the producer keeps its messages and the worker waits for the broker, even when a
rebalance asks it to restore sites right then. A supervisor stands by, as compose's `restart:` or
systemd would, and must not be needed. The outcome is compared with `replay` of the same input,
like the other fault tests.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from safewatch.stack import stack_down, stack_status, stack_up, stop_part

from .conftest import free_ports
from .scenario import isolated
from .test_chaos import assert_exact, run

OUTAGE_S = 60.0


@pytest.fixture(scope="module")
def durable_stack(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A second embedded stack whose broker keeps its topics in an embedded S3 server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        objectstore_port = sock.getsockname()[1]
    settings = stack.model_copy(
        update={
            "state_dir": tmp_path_factory.mktemp("safewatch-durable"),
            "broker_storage": "s3",
            "objectstore_port": objectstore_port,
            **free_ports(),
        }
    )
    try:
        stack_up(settings)
        yield settings
    finally:
        stack_down(settings)


def test_durable_profile_says_where_topics_live(durable_stack):
    parts = {p.name: p for p in stack_status(durable_stack)}
    assert parts["objectstore"].healthy and parts["broker"].healthy
    assert "s3 storage" in parts["broker"].note


@pytest.mark.asyncio
async def test_broker_stopped_for_a_minute_loses_nothing(durable_stack, tmp_path):
    state: dict[str, float | None] = {"stopped": None}

    async def faults(elapsed, group):
        if elapsed >= 5 and state["stopped"] is None:
            await asyncio.to_thread(stop_part, durable_stack, "broker")
            state["stopped"] = elapsed
        elif (stopped := state["stopped"]) is not None and stopped > 0 and elapsed - stopped >= OUTAGE_S:
            await asyncio.to_thread(stack_up, durable_stack)
            state["stopped"] = -1.0

    report = await run(durable_stack, tmp_path, workers=1, faults=faults, tail_s=OUTAGE_S + 10, supervise=True)
    assert state["stopped"] == -1.0, "the broker was never started again"
    assert_exact(report)
    assert report["worker restarts by the supervisor"] == 0


@pytest.mark.asyncio
async def test_worker_started_while_the_broker_is_down_waits_for_it(durable_stack, tmp_path):
    from .pipeline_helpers import spawn, stop

    settings = await isolated(durable_stack)
    await asyncio.to_thread(stop_part, durable_stack, "broker")
    log = tmp_path / "worker.log"
    proc = spawn(settings, log, "worker")
    try:
        await asyncio.sleep(8)
        assert proc.poll() is None, log.read_text()[-2000:]
        assert "not reachable" in log.read_text()
        await asyncio.to_thread(stack_up, durable_stack)
        # It goes on by itself: its metrics answer once the Faust app runs.
        assert await _metrics_answer(settings.worker_web_port, timeout=60), log.read_text()[-2000:]
    finally:
        stop(proc)
        await asyncio.to_thread(stack_up, durable_stack)


async def _metrics_answer(port: int, timeout: float) -> bool:
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(int(timeout * 2)):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return False
