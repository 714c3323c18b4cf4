"""WeCom, DingTalk and Feishu robots and an SMS gateway, played by a real local HTTP server that
checks each request the way its vendor does (signatures recomputed, answers with their codes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.auth import issue_token
from alerts.delivery import deliver
from alerts.routing import load_routing
from alerts.store import TaskStore
from config.settings import Settings
from tests.unit.test_alert_store import incident

DING_SECRET, FEISHU_SECRET, WECOM_KEY, GATEWAY_TOKEN = "SECding-0123", "feishu-secret-9", "wecom-key-77", "gw-token-5"


class Robots:
    """One server for every robot kind; records what it accepted."""

    def __init__(self) -> None:
        accepted = self.accepted = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = self.check(url.path, query, body)
                if answer.get("errcode", answer.get("code")) == 0:
                    accepted.append((url.path, body))
                data = json.dumps(answer).encode()
                self.send_response(200)  # robots answer 200 even when they refuse
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def check(self, path, query, body):
                if path == "/cgi-bin/webhook/send":
                    ok = query.get("key") == WECOM_KEY and body["msgtype"] == "markdown"
                    return {"errcode": 0 if ok else 93000, "errmsg": "ok" if ok else "invalid webhook url"}
                if path == "/robot/send":
                    mac = hmac.new(
                        DING_SECRET.encode(), f"{query['timestamp']}\n{DING_SECRET}".encode(), hashlib.sha256
                    )
                    ok = query.get("sign") == base64.b64encode(mac.digest()).decode()
                    return {"errcode": 0 if ok else 310000, "errmsg": "ok" if ok else "sign not match"}
                if path == "/robot/limited":
                    return {"errcode": 130101, "errmsg": "send too fast"}
                if path.startswith("/open-apis/bot/v2/hook/"):
                    mac = hmac.new(f"{body['timestamp']}\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256)
                    ok = body.get("sign") == base64.b64encode(mac.digest()).decode() and "card" in body
                    return {"code": 0 if ok else 19021, "msg": "success" if ok else "sign match fail"}
                if path == "/sms":
                    ok = self.headers.get("Authorization") == f"Bearer {GATEWAY_TOKEN}"
                    return {"code": 0 if ok else 401}
                return {"code": 404}

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def robots():
    r = Robots()
    yield r
    r.close()


def routing_file(tmp_path: Path, robots: Robots, dingtalk_path: str = "/robot/send") -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "departments:\n"
        "  county:\n"
        "    name: County duty room\n"
        f"    wecom: {{url: '{robots.url}/cgi-bin/webhook/send?key={WECOM_KEY}'}}\n"
        f"    dingtalk: {{url: '{robots.url}{dingtalk_path}?access_token=tok-1', secret_env: SW_IT_DING,"
        " at_mobiles: ['13800001111']}\n"
        "    feishu: {url_env: SW_IT_FEISHU_URL, secret_env: SW_IT_FEISHU}\n"
        "    sms: ['+8613800001111']\n"
        "routes:\n  - {departments: [county]}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, robots: Robots):
    monkeypatch.setenv("SW_IT_DING", DING_SECRET)
    monkeypatch.setenv("SW_IT_FEISHU", FEISHU_SECRET)
    monkeypatch.setenv("SW_IT_FEISHU_URL", f"{robots.url}/open-apis/bot/v2/hook/feishu-token-secret")


def settings_for(tmp_path: Path, robots: Robots) -> Settings:
    return Settings(
        state_dir=tmp_path,
        delivery_retries=2,
        delivery_backoff_s=0.01,
        sms_gateway_url=f"{robots.url}/sms",
        sms_gateway_token=GATEWAY_TOKEN,
    )


async def send_all(store, routing, settings) -> dict[str, str]:
    async with httpx.AsyncClient() as client:
        return {
            n.channel: await deliver(n, routing=routing, client=client, store=store, settings=settings)
            for n in store.unsent()
        }


@pytest.mark.asyncio
async def test_every_robot_and_the_sms_gateway_accept_their_message(tmp_path: Path, robots: Robots, env):
    routing = load_routing(routing_file(tmp_path, robots), alerts_api="http://alerts.test")
    settings = settings_for(tmp_path, robots)
    store = TaskStore(tmp_path / "a.sqlite3")
    store.channels_of = routing.channels_of
    [task] = store.record_incident(incident("red"), ["county"], 5)
    assert await send_all(store, routing, settings) == {
        "wecom": "sent",
        "dingtalk": "sent",
        "feishu": "sent",
        "sms": "sent",
    }
    paths = sorted(p.split("/hook/")[0] for p, _ in robots.accepted)
    assert paths == ["/cgi-bin/webhook/send", "/open-apis/bot/v2", "/robot/send", "/sms"]
    assert store.get_task(task.task_id).status == "delivered"
    # The record keeps no key: not in the attempts, not in what the API shows.
    urls = sorted(d.url for d in store.deliveries(task.task_id))
    assert [u.split("/", 3)[3] for u in urls] == [
        "cgi-bin/webhook/send?key=***",
        "open-apis/bot/v2/hook/***",
        "robot/send?access_token=***&timestamp=***&sign=***",
        "sms",
    ]
    _, secret = issue_token(store, "duty", "duty_officer")
    api = TestClient(create_app(settings, store, lambda: routing))
    detail = api.get(f"/tasks/{task.task_id}", headers={"Authorization": f"Bearer {secret}"}).text
    for key in (WECOM_KEY, "tok-1", "feishu-token-secret", DING_SECRET, FEISHU_SECRET, GATEWAY_TOKEN):
        assert key not in detail
    store.close()


@pytest.mark.asyncio
async def test_a_refusing_robot_is_retried_then_failed_and_a_bad_secret_is_refused(
    tmp_path: Path, robots: Robots, env, monkeypatch
):
    routing = load_routing(routing_file(tmp_path, robots, "/robot/limited"), alerts_api="http://alerts.test")
    settings = settings_for(tmp_path, robots)
    store = TaskStore(tmp_path / "a.sqlite3")
    store.channels_of = routing.channels_of
    [task] = store.record_incident(incident("red"), ["county"], 5)
    outcome = await send_all(store, routing, settings)
    assert outcome["dingtalk"] == "failed" and outcome["wecom"] == "sent"
    ding = [d for d in store.deliveries(task.task_id) if "/robot/limited" in d.url]
    assert len(ding) == settings.delivery_retries + 1  # HTTP 200, but code 130101: tried again
    assert all("code 130101" in d.error for d in ding)

    monkeypatch.setenv("SW_IT_FEISHU", "not-the-bot's-secret")
    routing = load_routing(routing_file(tmp_path, robots), alerts_api="http://alerts.test")
    store2 = TaskStore(tmp_path / "b.sqlite3")
    store2.channels_of = routing.channels_of
    [task] = store2.record_incident(incident("red"), ["county"], 5)
    assert (await send_all(store2, routing, settings))["feishu"] == "failed"
    assert "19021" in [d for d in store2.deliveries(task.task_id) if "/hook/" in d.url][0].error
    store.close()
    store2.close()
