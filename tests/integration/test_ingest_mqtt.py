"""The ingest gateway's MQTT path on the real mosquitto and the real broker: ACL, ownership, QoS 1 across SIGKILL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config.settings import Settings
from config.topics import DEADLETTER_TOPIC, telemetry_topic

from .ingest_helpers import (
    ENT_A,
    ENT_B,
    SENSOR_A,
    SENSOR_B,
    SITE_A,
    SITE_B,
    Gateway,
    frame,
    gateway_settings,
    issue_token,
    read_topic,
    retire_session,
    safewatch_cli,
)


def topic(enterprise: str, site: str) -> str:
    return f"safewatch/{enterprise}/{site}/telemetry"


class Plant:
    """A plant's MQTT client (MQTT 5, so a refused publish comes back with its reason code)."""

    def __init__(self, settings: Settings, user: str, password: str):
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"plant-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, password)
        self.client.max_inflight_messages_set(200)
        self.acks: dict[int, int] = {}  # mid → PUBACK reason code
        self.client.on_publish = lambda c, u, mid, rc, props: self.acks.__setitem__(mid, rc.value)
        self.connect_rc: int | None = None
        self.client.on_connect = lambda c, u, f, rc, props: setattr(self, "connect_rc", rc.value)
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while self.connect_rc is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def wait_acked(self, infos: list[mqtt.MQTTMessageInfo], timeout: float = 30) -> list[int]:
        """The PUBACK reason codes of these publishes (0 = success, 135 = not authorised)."""
        deadline = time.monotonic() + timeout
        while any(i.mid not in self.acks for i in infos) and time.monotonic() < deadline:
            time.sleep(0.01)
        return [self.acks.get(i.mid, -1) for i in infos]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def mq(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict, object]]:
    group = f"it{uuid.uuid4().hex[:6]}"
    settings = gateway_settings(stack, mqtt_share_group=group, mqtt_client_id=f"gw-{group}")
    tokens = {ENT_A: issue_token(settings, ENT_A), ENT_B: issue_token(settings, ENT_B)}
    logs = tmp_path_factory.mktemp("gw")
    yield settings, tokens, logs
    retire_session(settings)


def start_gateway(settings: Settings, logs, name: str) -> Gateway:
    gateway = Gateway(settings, logs / f"{name}.log")
    deadline = time.monotonic() + 15  # the subscription is in place once it logs in
    while "subscribed" not in (logs / f"{name}.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return gateway


@pytest.mark.asyncio
async def test_acl_and_ownership(mq) -> None:
    settings, tokens, logs = mq
    gateway = start_gateway(settings, logs, "acl")
    try:
        (id_a, secret_a), (id_b, secret_b) = tokens[ENT_A], tokens[ENT_B]
        bad = Plant(settings, id_a, "wrong password")
        assert bad.connect_rc not in (None, 0)  # mosquitto refuses the login
        bad.close()

        a, b = Plant(settings, id_a, secret_a), Plant(settings, id_b, secret_b)
        assert a.connect_rc == 0 and b.connect_rc == 0
        own_a, own_b = frame(SITE_A, SENSOR_A, value=1.25), frame(SITE_B, SENSOR_B, value=3.5)
        ok = [
            a.publish(topic(ENT_A, SITE_A), orjson.dumps(own_a)),
            b.publish(topic(ENT_B, SITE_B), orjson.dumps(own_b)),
        ]
        # A under B's prefix: the ACL refuses it at mosquitto (PUBACK 135, not authorised)
        denied = [a.publish(topic(ENT_B, SITE_B), orjson.dumps(frame(SITE_B, SENSOR_B, value=99.0)))]
        # A under its own prefix but for B's site, and a payload whose site is not the topic's: the gateway refuses
        stolen = orjson.dumps(frame(SITE_B, SENSOR_B, value=98.0))
        mismatch = orjson.dumps(frame("hz-zjg-jetty01", SENSOR_A))
        refused = [a.publish(topic(ENT_A, SITE_B), stolen), a.publish(topic(ENT_A, SITE_A), mismatch)]
        assert a.wait_acked(ok[:1] + denied + refused) == [0, 135, 0, 0]
        assert b.wait_acked(ok[1:]) == [0]

        hazchem = await read_topic(settings, telemetry_topic("hazchem", settings.topic_prefix), 1)
        mine = await read_topic(settings, telemetry_topic("mine", settings.topic_prefix), 2, timeout=5)
        assert hazchem == [(SITE_A, own_a)]
        assert mine == [(SITE_B, own_b)]  # the denied publish never got through
        dead = await read_topic(settings, settings.topic(DEADLETTER_TOPIC), 2)
        reasons = sorted((rec["reason"], rec["enterprise_id"], rec["topic"]) for _, rec in dead)
        assert reasons == [
            ("not_authorised", ENT_A, f"mqtt:{topic(ENT_A, SITE_B)}"),
            ("topic_mismatch", ENT_A, f"mqtt:{topic(ENT_A, SITE_A)}"),
        ]
        assert any(rec["raw"].encode() == stolen for _, rec in dead)
        feed = gateway.feed(secret_a).json()
        assert feed["last_day"]["not_authorised"] == 1 and feed["refused_examples"]["not_authorised"][0][
            "via"
        ].startswith("mqtt:")
        a.close()
        b.close()
    finally:
        gateway.stop()


@pytest.mark.asyncio
async def test_qos1_survives_a_gateway_sigkill(mq) -> None:
    settings, tokens, logs = mq
    settings = settings.model_copy(update={"topic_prefix": f"it-kill-{uuid.uuid4().hex[:6]}."})
    id_a, secret_a = issue_token(settings, ENT_A)  # tokens, like telemetry, are per topic prefix
    gateway = start_gateway(settings, logs, "before-kill")
    try:
        await _kill_and_restart(settings, logs, gateway, id_a, secret_a)
    finally:
        gateway.stop()


async def _kill_and_restart(settings: Settings, logs, gateway: Gateway, id_a: str, secret_a: str) -> None:
    plant = Plant(settings, id_a, secret_a)
    n, t0 = 3000, int(time.time() * 1000)
    hazchem = telemetry_topic("hazchem", settings.topic_prefix)

    def send(i: int) -> mqtt.MQTTMessageInfo:
        return plant.publish(topic(ENT_A, SITE_A), orjson.dumps(frame(ts=t0 + i, value=float(i))))

    infos = [send(i) for i in range(1000)]
    assert plant.wait_acked(infos) == [0] * 1000
    assert await read_topic(settings, hazchem, 1)  # the gateway is forwarding
    infos += [send(i) for i in range(1000, 2000)]
    gateway.kill()  # SIGKILL mid-stream: whatever it held unacknowledged must come back
    infos += [send(i) for i in range(2000, n)]  # these wait in mosquitto for the gateway's session
    assert plant.wait_acked(infos) == [0] * n  # every one acknowledged to the plant
    plant.close()
    assert gateway.proc.returncode == -9
    before = await read_topic(settings, hazchem, n, timeout=3)
    assert 0 < len(before) < n  # some went through before the kill; the rest waited in mosquitto
    gateway = start_gateway(settings, logs, "after-kill")  # same client id: the persistent session
    try:
        values: set[int] = set()
        deadline, want = time.monotonic() + 60, n
        while values != set(range(n)) and time.monotonic() < deadline:  # duplicates may come first: read on
            got = await read_topic(settings, hazchem, want, timeout=10)
            values = {int(rec["readings"][0]["value"]) for _, rec in got}
            want = len(got) + 1
        assert values == set(range(n)), f"missing {sorted(set(range(n)) - values)[:20]}"
    finally:
        gateway.stop()


def test_install_finds_the_installed_mosquitto() -> None:
    # `make setup` installed Debian's packages through this same function; now it changes nothing.
    from safewatch.stack import install_mosquitto, which

    path = install_mosquitto()
    assert path == which("mosquitto") and which("mosquitto_pub")


def test_a_revoked_token_can_no_longer_log_in(mq) -> None:
    settings, _, _ = mq
    token_id, secret = issue_token(settings, ENT_A, "to be revoked")
    first = Plant(settings, token_id, secret)
    assert first.connect_rc == 0
    first.close()
    assert safewatch_cli(settings, "enterprise", "token", "revoke", token_id).returncode == 0
    # mosquitto rereads its password file on the SIGHUP `revoke` sends, at its next loop turn
    deadline, rc = time.monotonic() + 5, 0
    while rc == 0 and time.monotonic() < deadline:
        again = Plant(settings, token_id, secret)
        rc = again.connect_rc if again.connect_rc is not None else -1
        again.close()
    assert rc not in (0, -1)  # refused by mosquitto (not a timeout)
