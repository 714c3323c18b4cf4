"""Group robots of the chat tools duty rooms use: WeCom (企业微信), DingTalk (钉钉) and Feishu (飞书),
each in its own documented message format, and an SMS gateway over HTTP.

Formats (the vendors' custom-robot documentation):
- WeCom: `{"msgtype": "markdown", "markdown": {"content": …}}`, content at most 4096 bytes of
  UTF-8, colours only `info` / `comment` / `warning`; the answer is `{"errcode": 0, …}`.
- DingTalk: `{"msgtype": "markdown", "markdown": {"title", "text"}, "at": {…}}`; with a secret
  the URL gets `timestamp` (ms) and `sign` = URL-quoted base64 HMAC-SHA256 keyed with the
  secret over `"<timestamp>\\n<secret>"`; the answer is `{"errcode": 0, …}`.
- Feishu: `{"timestamp", "sign", "msg_type": "interactive", "card": {…}}`, body at most 20 KB;
  `sign` = base64 HMAC-SHA256 keyed with `"<timestamp>\\n<secret>"` over the empty string,
  timestamp in seconds; the answer is `{"code": 0, …}`.
The robots answer HTTP 200 even when they refuse a message, so the code in the body decides.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from typing import Any

WECOM_MAX_BYTES = 4096
FEISHU_MAX_BYTES = 20 * 1024
SMS_MAX_CHARS = 140  # two segments of a Chinese SMS; gateways split longer texts, at a cost
HEADLINE = {
    "task": "新任务 New task",
    "escalation": "升级 ESCALATION",
    "handover": "转交 Handed over",
    "revision": "更新 Update",
}
COLOUR_ZH = {"red": "红色", "orange": "橙色", "yellow": "黄色", "blue": "蓝色"}
WECOM_FONT = {"red": "warning", "orange": "warning", "yellow": "comment", "blue": "info"}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's `sign` query value (already URL-quoted)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(mac))


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's `sign` body field."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def _lines(payload: dict[str, Any]) -> tuple[str, list[str]]:
    """A title and the lines every robot shows, from the v1 payload."""
    labels, annotations = payload["labels"], payload["annotations"]
    colour = labels["severity"]
    status = (
        "已解除 RESOLVED" if payload["status"] == "resolved" else f"{COLOUR_ZH.get(colour, colour)} {colour.upper()}"
    )
    title = f"[safewatch {status}] {HEADLINE[payload['kind']]}: {annotations['summary']}"
    incident = payload["incident"]
    lines = [
        f"企业 Enterprise: {incident.get('enterprise_name', '')} ({labels['enterprise_id']})",
        f"地点 Site: {incident.get('site_name', '')}, region {labels['region']}, sector {labels['sector']}",
        f"任务 Task: {payload['task']['task_id']} → {labels['department']} ({payload['task']['status']})",
    ]
    if payload.get("reason"):
        lines.append(f"原因 Why: {payload['reason']}")
    lines.append(f"处理 Act: {annotations['task_url']}")
    return title, lines


def _cut(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode(errors="ignore") + "…"


def wecom_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A WeCom group-robot markdown message."""
    title, lines = _lines(payload)
    font = WECOM_FONT.get(payload["labels"]["severity"], "comment")
    content = f'## <font color="{font}">{title}</font>\n' + "\n".join(f"> {line}" for line in lines)
    return {"msgtype": "markdown", "markdown": {"content": _cut(content, WECOM_MAX_BYTES)}}


def dingtalk_body(payload: dict[str, Any], at_mobiles: list[str] | None = None) -> dict[str, Any]:
    """A DingTalk custom-robot markdown message (phones in `at_mobiles` are @-mentioned)."""
    title, lines = _lines(payload)
    text = f"### {title}\n\n" + "\n\n".join(f"- {line}" for line in lines)
    mobiles = at_mobiles or []
    if mobiles:
        text += "\n\n" + " ".join(f"@{m}" for m in mobiles)  # DingTalk needs them in the text too
    return {
        "msgtype": "markdown",
        "markdown": {"title": title[:64], "text": text},
        "at": {"atMobiles": mobiles, "isAtAll": False},
    }


def feishu_body(payload: dict[str, Any], secret: str | None, timestamp_s: int) -> dict[str, Any]:
    """A Feishu custom-bot interactive card, signed when the bot has a secret."""
    title, lines = _lines(payload)
    template = "green" if payload["status"] == "resolved" else payload["labels"]["severity"]
    card = {
        "config": {"wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": template},
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "\n".join(lines)}}],
    }
    body: dict[str, Any] = {"msg_type": "interactive", "card": card}
    if secret:
        body = {"timestamp": str(timestamp_s), "sign": feishu_sign(secret, timestamp_s), **body}
    return body


def signed_dingtalk_url(url: str, secret: str | None, timestamp_ms: int) -> str:
    """The robot URL with `timestamp` and `sign` appended when it has a secret."""
    if not secret:
        return url
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"


def sms_body(payload: dict[str, Any], to: list[str], key: str) -> dict[str, Any]:
    """The SMS gateway request: recipients, a short text, and the message key for de-duplication."""
    title, _ = _lines(payload)
    text = f"{title} 任务{payload['task']['task_id']}"
    return {"to": to, "text": text[:SMS_MAX_CHARS], "key": key}


def robot_answer_ok(kind: str, answer: Any) -> str | None:
    """None when the robot took the message, else why not (its code and message)."""
    if not isinstance(answer, dict):
        return f"{kind} answered without a JSON object"
    code = answer.get("code", answer.get("StatusCode")) if kind == "feishu" else answer.get("errcode")
    if code == 0:
        return None
    message = answer.get("msg") or answer.get("errmsg") or answer.get("StatusMessage") or ""
    return f"{kind} refused the message: code {code}: {str(message)[:200]}"


def redact_url(url: str) -> str:
    """A URL fit for the record: robot keys and tokens travel in query strings (WeCom, DingTalk)
    or as the last path segment after `/hook/` (Feishu), and a URL may carry a user and password."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    if "/hook/" in path:
        path = path[: path.index("/hook/") + len("/hook/")] + "***"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))
