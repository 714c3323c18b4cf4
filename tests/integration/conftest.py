"""Integration fixtures: one real embedded stack (Tansu, InfluxDB, mosquitto) per test session.

It runs on its own free loopback ports and state dir, so it never touches a running demo.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from config.settings import Settings
from safewatch.stack import influx_rpc_port, stack_down, stack_up

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as `integration` (deselect with -m 'not integration')."""
    # This hook sees the whole session's items, not only this folder's: filter by path.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def _bind(stack: ExitStack, port: int = 0) -> int | None:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return None
    return sock.getsockname()[1]


def free_ports() -> dict[str, int]:
    """Distinct free loopback ports for every server a test session may start."""
    # Sockets stay bound until all are chosen, so no two ports coincide.
    with ExitStack() as held:
        names = ("broker_port", "alerts_port", "worker_web_port", "mqtt_port", "ingest_port")
        ports = {name: _bind(held) for name in names}
        while True:
            influx = _bind(held)
            # InfluxDB also binds its RPC service on a port derived from the HTTP one.
            probe = Settings(influx_port=influx)
            if _bind(held, influx_rpc_port(probe)) is not None:
                break
        ports["influx_port"] = influx
    return ports


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running embedded stack, stopped at the end of the session."""
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("safewatch-stack"),
        broker_host="127.0.0.1",
        influx_host="127.0.0.1",
        alerts_host="127.0.0.1",
        mqtt_host="127.0.0.1",
        ingest_host="127.0.0.1",
        mqtt_password=None,
        ingest_db=None,
        # Explicit None beats SAFEWATCH_* in the environment: tests must not reach a real cluster.
        broker_url=None,
        influx_url=None,
        influx_user=None,
        influx_password=None,
        influx_token=None,
        alerts_db=None,
        alerts_db_url=None,
        **free_ports(),
    )
    try:
        stack_up(settings)
        yield settings
    finally:
        stack_down(settings)


from .scenario import leak_run  # noqa: E402,F401  (session fixture shared by pipeline and alert tests)
