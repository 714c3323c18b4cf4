"""MQTT in: a shared subscription to every enterprise's telemetry topics, QoS 1, acknowledged after Kafka.

paho-mqtt runs its network loop in its own thread with manual acks: a message is acknowledged
to mosquitto only once the broker has it (or its dead-letter record). The session is persistent
(clean_session false, a stable client id), so a gateway killed mid-batch gets every
unacknowledged message again when it reconnects: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

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


class MqttIn:
    """Subscribes, hands messages to the event loop in batches, acks them after the forwarder returns."""

    def __init__(self, settings: Settings, password: str, forwarder: Forwarder):
        self.settings = settings
        self.forwarder = forwarder
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.mqtt_client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        self.client.username_pw_set(settings.mqtt_user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.connected = asyncio.Event()
        self._pending: deque[tuple[mqtt.MQTTMessage, float]] = deque()  # (message, when it arrived)
        self._wake = asyncio.Event()
        self._signalled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Connect and forward until cancelled."""
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        self.client.loop_start()  # reconnects by itself when mosquitto goes away
        slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        order: asyncio.Queue[tuple[asyncio.Task, list[mqtt.MQTTMessage]]] = asyncio.Queue()
        acker = asyncio.create_task(self._ack_in_order(order, slots))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._signalled = False
                while self._pending:
                    await slots.acquire()
                    n = min(len(self._pending), self.settings.mqtt_batch)
                    arrived = [self._pending.popleft() for _ in range(n)]
                    order.put_nowait((asyncio.create_task(self._forward(arrived)), [m for m, _ in arrived]))
        finally:
            acker.cancel()
            self.client.disconnect()
            self.client.loop_stop()

    async def _ack_in_order(self, order: asyncio.Queue, slots: asyncio.Semaphore) -> None:
        """Acknowledge each batch once Kafka has it, in the order the batches arrived (as MQTT asks)."""
        while True:
            task, messages = await order.get()
            await task
            for msg in messages:
                if msg.qos > 0:
                    self.client.ack(msg.mid, msg.qos)
            slots.release()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mosquitto refused the gateway's login: %s", reason_code)
            return
        client.subscribe(f"$share/{self.settings.mqtt_share_group}/{TOPIC_FILTER}", qos=1)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("mosquitto refused the gateway's subscription: %s", reason_codes)
        else:
            log.info("subscribed to $share/%s/%s", self.settings.mqtt_share_group, TOPIC_FILTER)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        # paho's thread: queue, and wake the loop once per burst rather than once per message.
        self._pending.append((msg, time.monotonic()))
        if not self._signalled and self._loop is not None:
            self._signalled = True
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _forward(self, arrived: list[tuple[mqtt.MQTTMessage, float]]) -> None:
        """Check and send one batch to Kafka, retrying until the broker has it; acks are _ack_in_order's."""
        batches: list[tuple[str, str, list[Outcome]]] = []
        messages = [msg for msg, _ in arrived]
        for msg in messages:
            where = parse_topic(msg.topic)
            # The ACL lets an account publish only under its own credit code, so the topic names the sender.
            enterprise_id, site_id = where or ("?", "?")
            items = split_body(bytes(msg.payload))
            outcomes = self.forwarder.check_items(enterprise_id, items, topic_site=site_id)
            batches.append((enterprise_id, f"mqtt:{msg.topic}", outcomes))
        delay = 0.5
        while True:
            try:
                await self.forwarder.forward(batches, [at for _, at in arrived])
                break
            except Exception:  # not acked: retried here, or redelivered by mosquitto after a restart
                log.exception("forwarding %d MQTT messages failed; retrying in %.1f s", len(messages), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
