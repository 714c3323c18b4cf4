"""`safewatch gateway`: the HTTP API and the MQTT subscriber in one process, one Kafka producer.

Stateless: enterprise tokens come from the compacted tokens topic (followed while running), feed
statistics go to InfluxDB, so any number of gateways can sit behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import uvicorn

from config.heap import freeze_startup_heap
from config.settings import Settings
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry

from .app import create_app
from .feed import Feed
from .feed_store import FeedStore
from .forward import Forwarder
from .mqtt import MqttIn
from .token_topic import TokenFollower, migrate_legacy
from .tokens import TokenTable

log = logging.getLogger(__name__)


async def serve(
    settings: Settings,
    mqtt_password: str | None,
    *,
    on_tokens: Callable[[TokenTable], None] | None = None,
    log_level: str = "info",
) -> None:
    """Run until interrupted; `mqtt_password` None leaves MQTT out (HTTP only).

    `on_tokens(table)` runs once the tokens are loaded and after every change seen on their topic
    (the CLI passes the writer of mosquitto's password file and ACL)."""
    registry = load_registry(settings.registry)
    tokens = TokenTable()
    on_change = None if on_tokens is None else lambda: on_tokens(tokens)
    follower = TokenFollower(settings, tokens, on_change)
    await follower.load()
    await migrate_legacy(settings, tokens)
    log.info("%d enterprise tokens (%d live) from %s", len(tokens.list()), len(tokens.list(True)), follower.topic)
    if on_change is not None:
        on_change()
    feed = Feed()
    feeds = FeedStore(settings, registry, feed)
    producer = TelemetryProducer(
        settings.bootstrap,
        linger_ms=settings.producer_linger_ms,
        timeout_s=settings.producer_timeout_s,
        client_id="safewatch-gateway",
        acks="all",  # 202 / the MQTT ack promise the message is on the broker
    )
    await producer.start()
    forwarder = Forwarder(settings, registry, producer, feed)
    app = create_app(settings, registry, follower, forwarder, feeds)
    freeze_startup_heap()
    config = uvicorn.Config(
        app,
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_level=log_level,
        access_log=False,
        ssl_certfile=settings.ingest_tls_cert,
        ssl_keyfile=settings.ingest_tls_key,
    )
    server = uvicorn.Server(config)
    tasks = [asyncio.create_task(follower.follow()), asyncio.create_task(feeds.run())]
    if mqtt_password is not None:
        tasks.append(asyncio.create_task(MqttIn(settings, mqtt_password, forwarder).run()))
    # uvicorn raises the signal it stopped on again once it is done: SIGTERM's default action would
    # end the process there, before the feed's last flush below. Ignored here, as uvicorn has seen it.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        await server.serve()
    finally:
        # MQTT first (its last batches still count in the feed), then the feed's final flush.
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await producer.stop()
        await feeds.aclose()
        signal.signal(signal.SIGTERM, previous)
