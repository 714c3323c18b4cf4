"""MQTT in: a shared subscription to every enterprise's telemetry topics, QoS 1, acknowledged after Kafka.

gmqtt (asyncio-native) runs on the gateway's event loop with automatic acknowledgement off: a
message's PUBACK goes out only once the batch holding it is on the broker. The session is
persistent (clean_session false, a stable client id), so a gateway killed mid-batch gets every
unacknowledged message again when it reconnects: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gmqtt
from gmqtt import Client
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv311

from config.settings import Settings

from .forward import Forwarder
from .intake import Outcome, split_body

log = logging.getLogger(__name__)

TOPIC_ROOT = "safewatch"
TOPIC_FILTER = f"{TOPIC_ROOT}/+/+/telemetry"  # safewatch/<credit code>/<site id>/telemetry
RETRY_MAX_S = 10.0
# Batches being sent to Kafka at once: one waits out the producer's linger while the next fills.
BATCHES_IN_FLIGHT = 4


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(credit code, site id) of a telemetry topic, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or parts[3] != "telemetry" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass
class _Batch:
    """Messages forwarded together; `done` resolves once they and every earlier batch are on Kafka."""

    done: asyncio.Future
    after: asyncio.Future | None  # the previous batch's `done`: PUBACKs go out in arrival order
    items: list[tuple[str, bytes, float]] = field(default_factory=list)  # (topic, payload, arrived)
    mids: list[int] = field(default_factory=list)  # the broker's packet ids, to acknowledge


def _take_qos1_over(client: Client, on_qos1: Callable[[int, bytes, str], None]) -> Callable[[int], None]:
    """Have gmqtt hand each QoS 1 PUBLISH to `on_qos1(mid, payload, topic)`; returns the PUBACK sender.

    gmqtt's public way to acknowledge late is an async `on_message`, one asyncio task per message:
    half the gateway's CPU at 10k messages/s. Its handler's two methods used here are private,
    hence the pinned gmqtt minor version and this check at start-up."""
    handler = getattr(client, "_package_handler", None)
    if handler is None or not all(hasattr(handler, m) for m in ("_handle_qos_1_publish_packet", "_send_puback")):
        raise RuntimeError(f"gmqtt {gmqtt.__version__} lacks the handler methods the gateway relies on")
    handler._handle_qos_1_publish_packet = lambda mid, payload, topic, properties: on_qos1(mid, payload, topic)
    return handler._send_puback


async def forget_session(settings: Settings, password: str) -> None:
    """End the persistent session of `settings.mqtt_client_id` for good (a clean-session connect
    discards it): for a gateway id that will not come back, such as a bench's or a test's, whose
    share group would otherwise keep a copy of every later message."""
    client = Client(settings.mqtt_client_id, clean_session=True)
    client.set_auth_credentials(settings.mqtt_user, password)
    await client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30, version=MQTTv311)
    await client.disconnect()


class MqttIn:
    """Subscribes, gathers messages into batches, and lets each be acknowledged once its batch is forwarded."""

    def __init__(self, settings: Settings, password: str, forwarder: Forwarder):
        self.settings = settings
        self.forwarder = forwarder
        self.client = Client(settings.mqtt_client_id, clean_session=False, optimistic_acknowledgement=False)
        self.client.set_auth_credentials(settings.mqtt_user, password)
        self.client.set_config({"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": 1})
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_other_message
        self._puback = _take_qos1_over(self.client, self._on_message)
        self._open: _Batch | None = None
        self._ready: deque[_Batch] = deque()
        self._last: asyncio.Future | None = None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Connect (waiting for mosquitto if need be) and forward until cancelled."""
        delay = 0.5
        while True:
            try:
                await self.client.connect(
                    self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30, version=MQTTv311
                )
                break
            except (OSError, ConnectionError) as exc:
                log.warning(
                    "mosquitto at %s:%d not reachable (%r)", self.settings.mqtt_host, self.settings.mqtt_port, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._ready or self._open is not None:
                    await slots.acquire()
                    if self._ready:
                        batch = self._ready.popleft()
                    elif self._open is not None:
                        batch, self._open = self._open, None
                    else:
                        slots.release()
                        break
                    task = asyncio.create_task(self._forward(batch))
                    task.add_done_callback(lambda _: slots.release())
        finally:
            await self.client.disconnect()

    def _on_connect(self, client, flags, rc, properties) -> None:
        client.subscribe(f"$share/{self.settings.mqtt_share_group}/{TOPIC_FILTER}", qos=1)

    def _on_subscribe(self, client, mid, granted, properties) -> None:
        if any(q not in (0, 1, 2) for q in granted):
            log.error("mosquitto refused the gateway's subscription: %s", granted)
        else:
            log.info("subscribed to $share/%s/%s", self.settings.mqtt_share_group, TOPIC_FILTER)

    def _on_other_message(self, client, topic: str, payload: bytes, qos: int, properties) -> int:
        # The subscription is QoS 1, so only a publisher's QoS 0 message lands here (MQTT delivers
        # at the lower QoS); it is forwarded like the others, with nothing to acknowledge.
        self._on_message(None, payload, topic)
        return 0

    def _on_message(self, mid: int | None, payload: bytes, topic: str) -> None:
        """Join the open batch; its PUBACKs go out once it is forwarded."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch(asyncio.get_running_loop().create_future(), self._last)
            self._last = batch.done
            self._wake.set()
        batch.items.append((topic, payload, time.monotonic()))
        if mid is not None:
            batch.mids.append(mid)
        if len(batch.items) >= self.settings.mqtt_batch:
            self._ready.append(batch)
            self._open = None

    async def _forward(self, batch: _Batch) -> None:
        """Check and send one batch to Kafka, retrying until the broker has it, then release its PUBACKs."""
        batches: list[tuple[str, str, list[Outcome]]] = []
        for topic, payload, _ in batch.items:
            # The ACL lets an account publish only under its own credit code, so the topic names the sender.
            enterprise_id, site_id = parse_topic(topic) or ("?", "?")
            outcomes = self.forwarder.check_items(enterprise_id, split_body(payload), topic_site=site_id)
            batches.append((enterprise_id, f"mqtt:{topic}", outcomes))
        delay = 0.5
        while True:
            try:
                await self.forwarder.forward(batches, [at for _, _, at in batch.items])
                break
            except Exception:  # not acked: retried here, or redelivered by mosquitto after a restart
                log.exception("forwarding %d MQTT messages failed; retrying in %.1f s", len(batch.items), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        if batch.after is not None:
            await batch.after
        # A PUBACK on a connection newer than the message's is harmless: mosquitto redelivers
        # what the old connection left unacknowledged, and the worker drops the duplicate.
        for mid in batch.mids:
            self._puback(mid)
        if not batch.done.done():
            batch.done.set_result(None)
