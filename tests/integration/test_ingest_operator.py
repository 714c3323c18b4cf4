"""The README's operator examples, run as written against a real gateway, mosquitto and broker; `produce` output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from config.topics import DEADLETTER_TOPIC, telemetry_topic
from safewatch.processes import settings_env

from .ingest_helpers import ENT_A, SITE_A, Gateway, gateway_settings, read_topic, retire_session, safewatch_cli

README = Path(__file__).resolve().parents[2] / "README.md"


def operators_example() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- operators-example -->\s*```sh\n(.*?)```\s*<!-- /operators-example -->", text, re.S)
    assert block, "README lost its operators example"
    return block.group(1)


@pytest.mark.asyncio
async def test_readme_operator_example_runs(stack: Settings, tmp_path: Path) -> None:
    group = f"rd{uuid.uuid4().hex[:6]}"
    settings = gateway_settings(stack, mqtt_share_group=group, mqtt_client_id=f"gw-{group}")
    gateway = Gateway(settings, tmp_path / "gateway.log")
    deadline = time.monotonic() + 15
    while "subscribed" not in (tmp_path / "gateway.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    env = settings_env(settings, dict(os.environ))
    env |= {
        "GATEWAY": gateway.url,
        "MQTT_PORT": str(settings.mqtt_port),
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",  # `safewatch` of this venv
    }
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", operators_example()],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        single, ndjson, feed = answers
        assert single == {"accepted": 1, "refused": 0, "results": [{"index": 0, "status": "accepted"}]}
        assert ndjson["accepted"] == 1 and ndjson["results"][1]["reason"] == "ts_in_seconds"
        assert "milliseconds" in ndjson["results"][1]["detail"]
        assert feed["enterprise_id"] == ENT_A and feed["last_day"]["ts_in_seconds"] == 1

        got = await read_topic(settings, telemetry_topic("hazchem", settings.topic_prefix), 3)
        sensors = sorted(s["sensor_id"] for _, rec in got for s in rec.get("readings", [rec]))
        assert [k for k, _ in got] == [SITE_A] * 3  # keyed by site
        assert sensors == ["hz-zjg-tank01-t101-gas01", "hz-zjg-tank01-t101-gas02", "hz-zjg-tank01-t101-temp01"]
        dead = await read_topic(settings, settings.topic(DEADLETTER_TOPIC), 1)
        assert dead[0][1]["reason"] == "ts_in_seconds"
    finally:
        gateway.stop()
        retire_session(settings)


@pytest.mark.asyncio
async def test_produce_prints_a_summary_and_json(stack: Settings, tmp_path: Path) -> None:
    settings = gateway_settings(stack)
    from safewatch.stack import ensure_topics_async
    from streams.worker import topic_specs

    await ensure_topics_async(settings, topic_specs(settings))
    src = tmp_path / "readings.jsonl"
    line = orjson.dumps({"site_id": SITE_A, "sensor_id": "hz-zjg-tank01-t101-gas01", "ts": 1, "value": 1.0})
    src.write_bytes(line + b"\nnot json\n" + line + b"\n")

    human = safewatch_cli(settings, "produce", str(src))
    assert human.returncode == 0, human.stderr
    assert "3 lines read, 3 sent" in human.stdout
    assert f"3  → {settings.topic_prefix}telemetry.hazchem" in human.stdout
    assert "1 not JSON" in human.stdout and "ProduceCounts(" not in human.stdout

    scripted = safewatch_cli(settings, "produce", str(src), "--json")
    counts = json.loads(scripted.stdout)
    assert counts["lines"] == 3 and counts["sent"] == 3 and counts["invalid_json"] == 1
    assert counts["by_topic"] == {f"{settings.topic_prefix}telemetry.hazchem": 3}
