"""`safewatch gateway`: the HTTP API and the MQTT subscriber in one process, one Kafka producer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from config.settings import Settings
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry

from .app import create_app
from .feed import Feed
from .forward import Forwarder
from .mqtt import MqttIn
from .tokens import TokenStore

log = logging.getLogger(__name__)


async def serve(settings: Settings, mqtt_password: str | None, *, log_level: str = "info") -> None:
    """Run until interrupted; `mqtt_password` None leaves MQTT out (HTTP only)."""
    registry = load_registry(settings.registry)
    store = TokenStore(settings.ingest_db_path)
    feed = Feed()
    producer = TelemetryProducer(
        settings.bootstrap,
        linger_ms=settings.producer_linger_ms,
        timeout_s=settings.producer_timeout_s,
        client_id="safewatch-gateway",
        acks="all",  # 202 / the MQTT ack promise the message is on the broker
    )
    await producer.start()
    forwarder = Forwarder(settings, registry, producer, feed)
    app = create_app(settings, registry, store, forwarder, feed)
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
    mqtt_task = None
    if mqtt_password is not None:
        mqtt_task = asyncio.create_task(MqttIn(settings, mqtt_password, forwarder).run())
    try:
        await server.serve()
    finally:
        if mqtt_task is not None:
            mqtt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mqtt_task
        await producer.stop()
        store.close()
