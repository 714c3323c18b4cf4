"""From checked items to Kafka: accepted ones to `telemetry.<sector>`, refused ones to the dead-letter topic.

Shared by the HTTP and MQTT paths. `forward` returns only when the broker has every message,
so the caller may then answer 202 (HTTP) or acknowledge (MQTT).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from config.settings import Settings
from config.topics import DEADLETTER_TOPIC
from sensors.deadletter import RawMessage, deadletter_record
from sensors.producer import TelemetryProducer
from sensors.registry import Registry

from .feed import Feed
from .intake import Outcome, check

ITEMS = PromCounter("safewatch_ingest_items_total", "Items the gateway took in", ["enterprise", "via", "result"])
# From the gateway taking a request (HTTP) or a message (MQTT) in to the broker confirming it.
FORWARD_SECONDS = Histogram(
    "safewatch_ingest_forward_seconds",
    "Accept to Kafka-confirmed, per HTTP request or MQTT message",
    ["via"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)


class Forwarder:
    """Checks items for an enterprise, sends them on, and counts them in the feed."""

    def __init__(self, settings: Settings, registry: Registry, producer: TelemetryProducer, feed: Feed):
        self.settings = settings
        self.registry = registry
        self.producer = producer
        self.feed = feed
        self.deadletter_topic = settings.topic(DEADLETTER_TOPIC)
        self.future_ms = int(settings.future_tolerance_s * 1000)
        self.sensor_site = {k: v.site_id for k, v in registry.sensors.items()}
        self.site_sensors = {site: frozenset(s.id for s in registry.sensors_of_site(site)) for site in registry.sites}

    def check_items(
        self, enterprise_id: str, items: list[tuple[bytes, Any]], *, topic_site: str | None = None
    ) -> list[Outcome]:
        """Check the items of one body (from `split_body`) sent by an enterprise."""
        now = int(time.time() * 1000)
        return [
            check(
                i,
                raw,
                obj,
                enterprise_id=enterprise_id,
                registry=self.registry,
                now_ms=now,
                future_ms=self.future_ms,
                topic_prefix=self.settings.topic_prefix,
                topic_site=topic_site,
                sensor_site=self.sensor_site,
                site_sensors=self.site_sensors,
            )
            for i, (raw, obj) in enumerate(items)
        ]

    async def forward(self, batches: list[tuple[str, str, list[Outcome]]], received: list[float]) -> None:
        """Send (enterprise, source, outcomes) batches in one go; returns when the broker has them all.

        `received`: when each batch came in (time.monotonic()), for the accept → Kafka histogram."""
        messages: list[tuple[str, str | None, bytes]] = []
        for enterprise_id, source, outcomes in batches:
            for o in outcomes:
                if o.status == "accepted":
                    assert o.topic is not None
                    messages.append((o.topic, o.site_id, o.raw))
                else:
                    messages.append((self.deadletter_topic, o.site_id, self._deadletter(enterprise_id, source, o)))
        await self.producer.send_many(messages)
        done = time.monotonic()
        now = int(time.time() * 1000)
        # Metrics summed over the call first: a labelled child lookup per MQTT message costs more than its work.
        latency: dict[str, list[float]] = {}
        results: Counter = Counter()
        for (enterprise_id, source, outcomes), at in zip(batches, received, strict=True):
            self.feed.record(enterprise_id, outcomes, now, source)
            via = source.split(":", 1)[0]
            latency.setdefault(via, []).append(done - at)
            for o in outcomes:
                results[enterprise_id, via, o.reason or "accepted"] += 1
        for via, seconds in latency.items():
            histogram = FORWARD_SECONDS.labels(via)
            for x in seconds:
                histogram.observe(x)
        for labels, n in results.items():
            ITEMS.labels(*labels).inc(n)

    def _deadletter(self, enterprise_id: str, source: str, o: Outcome) -> bytes:
        # `topic` says where it came in (http, or the MQTT topic); offset is the item's index in its body.
        origin = RawMessage(source, -1, o.index, (o.site_id or "").encode() or None, o.raw)
        rec = deadletter_record(o.reason or "refused", o.detail or "", origin, site_id=o.site_id)
        rec["enterprise_id"] = enterprise_id
        rec["field"] = o.field
        return orjson.dumps(rec)
