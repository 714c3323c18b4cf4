"""The email channel against a real SMTP server (aiosmtpd, started here) and, beside it, the
webhook channel against a real HTTP receiver: one message per channel, each sent once."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller

from alerts.delivery import deliver
from alerts.routing import load_routing
from alerts.store import TaskStore
from config.settings import Settings
from tests.unit.test_alert_store import incident

from .conftest import free_ports
from .test_alerts import Receiver


class Mailbox:
    """An aiosmtpd handler: keeps what it accepts, refuses recipients at nobody@."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]  # type: ignore[misc]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_ports()["alerts_port"]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def setup(tmp_path: Path, port: int, departments: str) -> tuple[Settings, TaskStore, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "routing.yaml"
    path.write_text(f"departments:\n{departments}routes:\n  - {{departments: [county]}}\n", encoding="utf-8")
    routing = load_routing(path, alerts_api="http://alerts.test")
    settings = Settings(
        state_dir=tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="safewatch@bureau.example",
        delivery_retries=2,
        delivery_backoff_s=0.01,
        alerts_port=18080,
    )
    store = TaskStore(tmp_path / "a.sqlite3")
    store.channels_of = routing.channels_of
    return settings, store, routing


async def send_all(store: TaskStore, routing, settings: Settings) -> list[str]:
    async with httpx.AsyncClient() as client:
        return [
            await deliver(n, routing=routing, client=client, store=store, settings=settings) for n in store.unsent()
        ]


@pytest.mark.asyncio
async def test_email_reaches_every_address_with_the_json_attached(tmp_path: Path, smtp):
    box, port = smtp
    settings, store, routing = setup(
        tmp_path, port, "  county: {name: County, email: [duty@county.example, chief@county.example]}\n"
    )
    [task] = store.record_incident(incident("orange"), ["county"], 15)
    assert await send_all(store, routing, settings) == ["sent"]
    [envelope] = box.envelopes
    assert sorted(envelope.rcpt_tos) == ["chief@county.example", "duty@county.example"]
    assert envelope.mail_from == "safewatch@bureau.example"
    [message] = box.messages()
    [notification] = store.notifications(task.task_id)
    assert notification.channel == "email" and message["Message-ID"] == f"<{task.task_id}.email.0@safewatch>"
    assert message["Subject"].startswith("[safewatch ORANGE] New task: Gas and temperature rise")
    text = message.get_body(("plain",)).get_content()
    assert task.task_id in text and "/tasks/" in text
    [attachment] = list(message.iter_attachments())
    payload = orjson.loads(attachment.get_content())
    assert payload["schema"] == "safewatch.alert/v1" and payload["labels"]["department"] == "county"
    assert store.get_task(task.task_id).status == "delivered"
    assert [(d.url, d.http_status, d.ok) for d in store.deliveries(task.task_id)] == [
        ("mailto:duty@county.example,chief@county.example", 250, True)
    ]
    store.close()


@pytest.mark.asyncio
async def test_webhook_and_email_are_two_messages_each_sent_once(tmp_path: Path, smtp):
    box, port = smtp
    receiver = Receiver()
    try:
        settings, store, routing = setup(
            tmp_path, port, f"  county: {{name: County, webhook: '{receiver.url}/county', email: [d@c.example]}}\n"
        )
        [task] = store.record_incident(incident(), ["county"], 30)
        assert sorted(n.channel for n in store.unsent()) == ["email", "webhook"]
        assert await send_all(store, routing, settings) == ["sent", "sent"]
        assert await send_all(store, routing, settings) == []  # nothing left: nothing sent twice
        assert len(box.envelopes) == 1 and len(receiver.received) == 1
        assert receiver.received[0][1] == f"{task.task_id}:webhook:0"
        store.close()
    finally:
        receiver.close()


@pytest.mark.asyncio
async def test_refused_recipients_fail_at_once_and_a_dead_relay_is_retried(tmp_path: Path, smtp):
    box, port = smtp
    settings, store, routing = setup(tmp_path, port, "  county: {name: County, email: [nobody@county.example]}\n")
    [task] = store.record_incident(incident(), ["county"], 30)
    assert await send_all(store, routing, settings) == ["failed"]
    [attempt] = store.deliveries(task.task_id)  # permanent (550): not retried
    assert attempt.http_status == 550 and "refused every recipient" in attempt.error
    assert box.envelopes == []

    dead = free_ports()["alerts_port"]  # nothing listens there
    settings, store2, routing = setup(tmp_path / "dead", dead, "  county: {name: County, email: [duty@c.example]}\n")
    [task] = store2.record_incident(incident(), ["county"], 30)
    assert await send_all(store2, routing, settings) == ["failed"]
    attempts = store2.deliveries(task.task_id)
    assert len(attempts) == settings.delivery_retries + 1 and all("ConnectionRefusedError" in a.error for a in attempts)
    store.close()
    store2.close()
