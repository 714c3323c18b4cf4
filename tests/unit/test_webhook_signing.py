"""HMAC-SHA256 webhook signatures: what a receiver verifies, the key from the environment (never
the routing file), and the signed request as the delivery sends it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from alerts.delivery import deliver
from alerts.routing import RoutingError, load_routing
from alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signature, verify
from alerts.store import TaskStore
from config.settings import Settings

from .test_alert_store import incident

KEY = "k3y-for-the-county-only"
BODY = b'{"schema":"safewatch.alert/v1"}'


def test_a_receiver_accepts_a_good_signature_and_refuses_everything_else():
    now = 1_800_000_000
    headers = sign(KEY, now, BODY)
    assert headers[SIGNATURE_HEADER].startswith("v1=") and len(headers[SIGNATURE_HEADER]) == 3 + 64
    assert verify(KEY, headers, BODY, now=now + 10)
    assert verify(KEY, {k.lower(): v for k, v in headers.items()}, BODY, now=now)  # header case does not matter
    assert not verify(KEY, headers, BODY + b" ", now=now)  # altered body
    assert not verify("another key", headers, BODY, now=now)
    assert not verify(KEY, headers, BODY, now=now + 301)  # too old: a replay
    assert not verify(KEY, {**headers, TIMESTAMP_HEADER: str(now + 1)}, BODY, now=now)  # timestamp is signed too
    assert not verify(KEY, {TIMESTAMP_HEADER: str(now)}, BODY, now=now)
    assert not verify(KEY, {**headers, TIMESTAMP_HEADER: "soon"}, BODY, now=now)


def test_signature_is_plain_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(KEY.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(KEY, 1_800_000_000, BODY) == "v1=" + expected


ROUTING = """\
webhook_secret_env: SW_TEST_DEFAULT_KEY
departments:
  county: {name: County, webhook: "http://x/county", secret_env: SW_TEST_COUNTY_KEY}
  city: {name: City, webhook: "http://x/city"}
routes:
  - {departments: [county, city]}
"""


def test_keys_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    monkeypatch.setenv("SW_TEST_COUNTY_KEY", KEY)
    monkeypatch.setenv("SW_TEST_DEFAULT_KEY", "default-key")
    routing = load_routing(path, alerts_api="http://a")
    assert routing.departments["county"].secret == KEY
    assert routing.departments["city"].secret == "default-key"
    assert KEY not in routing.model_dump_json()  # never serialised with the routing
    monkeypatch.delenv("SW_TEST_COUNTY_KEY")
    with pytest.raises(RoutingError) as info:
        load_routing(path, alerts_api="http://a")
    assert f"{path}:3: departments.county.secret_env: environment variable SW_TEST_COUNTY_KEY" in str(info.value)


@pytest.mark.asyncio
async def test_delivery_signs_what_it_sends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    monkeypatch.setenv("SW_TEST_COUNTY_KEY", KEY)
    monkeypatch.setenv("SW_TEST_DEFAULT_KEY", "default-key")
    routing = load_routing(path, alerts_api="http://a")
    store = TaskStore(tmp_path / "a.sqlite3")
    store.record_incident(incident(), ["county"], 30)
    [notification] = store.unsent()
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ok = verify(KEY, dict(request.headers), request.content, now=int(time.time()))
        return httpx.Response(200 if ok else 401)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as client:
        outcome = await deliver(notification, routing=routing, client=client, store=store, settings=Settings())
    assert outcome == "sent" and len(seen) == 1
    assert orjson.loads(seen[0].content)["task"]["department"] == "county"
    store.close()
