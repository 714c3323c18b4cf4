"""Each robot's message against the fields its vendor documents, signatures recomputed here by
the documented algorithm, robot answers, and URLs redacted for the record."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse

from alerts.payload import webhook_body
from alerts.robots import (
    WECOM_MAX_BYTES,
    dingtalk_body,
    feishu_body,
    redact_url,
    robot_answer_ok,
    signed_dingtalk_url,
    sms_body,
    wecom_body,
)
from alerts.store import TaskStore

from .test_alert_store import incident

SECRET = "SEC0123456789abcdef"


def payload(tmp_path, severity="red", status="open", title="Tank area T-1: high_high gas 62 %LEL"):
    store = TaskStore(tmp_path / "a.sqlite3")
    inc = incident(severity, status=status).model_copy(update={"title": title})
    [task] = store.record_incident(inc, ["county"], 5)
    [n] = store.unsent()
    body = webhook_body(n, task, "http://alerts.test")
    store.close()
    return body


def test_wecom_markdown(tmp_path):
    body = wecom_body(payload(tmp_path))
    assert set(body) == {"msgtype", "markdown"} and body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert set(body["markdown"]) == {"content"}
    assert content.startswith('## <font color="warning">[safewatch 红色 RED] 新任务 New task: Tank area T-1')
    assert "http://alerts.test/tasks/task-" in content
    long = wecom_body(payload(tmp_path / "long", title="液位" * 3000))["markdown"]["content"]
    assert len(long.encode()) <= WECOM_MAX_BYTES  # the documented limit, in UTF-8 bytes


def test_dingtalk_markdown_and_sign(tmp_path):
    body = dingtalk_body(payload(tmp_path, "orange"), at_mobiles=["13800001111"])
    assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"title", "text"}
    assert body["at"] == {"atMobiles": ["13800001111"], "isAtAll": False}
    assert "@13800001111" in body["markdown"]["text"]  # DingTalk only notifies who the text names
    url = signed_dingtalk_url("https://oapi.dingtalk.com/robot/send?access_token=abc", SECRET, 1_800_000_000_123)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["access_token"] == ["abc"] and query["timestamp"] == ["1800000000123"]
    mac = hmac.new(SECRET.encode(), f"1800000000123\n{SECRET}".encode(), hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(mac).decode()]  # parse_qs undoes the URL quoting
    assert (
        signed_dingtalk_url("https://x/robot/send?access_token=abc", None, 1) == "https://x/robot/send?access_token=abc"
    )


def test_feishu_card_and_sign(tmp_path):
    body = feishu_body(payload(tmp_path, "yellow"), SECRET, 1_800_000_000)
    assert body["msg_type"] == "interactive" and body["timestamp"] == "1800000000"
    mac = hmac.new(f"1800000000\n{SECRET}".encode(), b"", hashlib.sha256).digest()
    assert body["sign"] == base64.b64encode(mac).decode()
    card = body["card"]
    assert card["header"]["template"] == "yellow" and card["header"]["title"]["tag"] == "plain_text"
    assert card["elements"][0]["tag"] == "div" and card["elements"][0]["text"]["tag"] == "lark_md"
    unsigned = feishu_body(payload(tmp_path / "u", "blue", status="closed"), None, 1)
    assert "sign" not in unsigned and unsigned["card"]["header"]["template"] == "green"  # the all-clear


def test_sms_is_short_and_keyed(tmp_path):
    body = sms_body(payload(tmp_path, title="x" * 500), ["+8613800001111"], "task-1:sms:0")
    assert body["to"] == ["+8613800001111"] and body["key"] == "task-1:sms:0" and len(body["text"]) <= 140


def test_robot_answers():
    assert robot_answer_ok("wecom", {"errcode": 0, "errmsg": "ok"}) is None
    assert robot_answer_ok("dingtalk", {"errcode": 310000, "errmsg": "sign not match"}) == (
        "dingtalk refused the message: code 310000: sign not match"
    )
    assert robot_answer_ok("feishu", {"code": 0, "msg": "success"}) is None
    assert robot_answer_ok("feishu", {"StatusCode": 0}) is None  # the older answer shape
    assert "19021" in robot_answer_ok("feishu", {"code": 19021, "msg": "sign match fail"})
    assert robot_answer_ok("wecom", ["not", "an", "object"]) is not None


def test_urls_are_redacted_for_the_record():
    assert redact_url("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=73febdcb-1b38") == (
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***"
    )
    assert redact_url("https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1&sign=x") == (
        "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=***&sign=***"
    )
    assert redact_url("https://open.feishu.cn/open-apis/bot/v2/hook/0b4c-secret") == (
        "https://open.feishu.cn/open-apis/bot/v2/hook/***"
    )
    assert redact_url("https://user:pw@hooks.example:8443/p") == "https://hooks.example:8443/p"
