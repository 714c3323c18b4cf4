"""What the gateway does with one input item: accept it for a telemetry topic, or refuse it with a reason.

Pure code: no I/O. An item is one frame or one reading as the plant sent it; the checks run in
the order an operator would fix them: is it JSON at all, is the site ours, is the time in
milliseconds and not ahead of us, does every field validate, is every sensor the site's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from config.topics import telemetry_topic
from sensors.deadletter import ts_hint
from sensors.registry import Registry
from sensors.schema import Frame, Reading, describe_validation_error

# An epoch-milliseconds time below this is before 1973: the sender almost surely sent seconds.
SECONDS_BELOW = 10**11
REASONS = (
    "malformed_json",  # not JSON
    "malformed_message",  # JSON, but not an object
    "unknown_site",  # no such site in the registry
    "not_authorised",  # the site belongs to another enterprise
    "topic_mismatch",  # MQTT: the payload's site is not the one in the topic
    "ts_in_seconds",  # ts looks like epoch seconds
    "future",  # ts ahead of the gateway's clock beyond the tolerance
    "invalid_field",  # a field fails the schema
    "unknown_sensor",  # a sensor that is not one of the site's
)


@dataclass
class Outcome:
    """One item's fate; `raw` is the item's bytes as sent (for a JSON array: the element re-encoded)."""

    index: int
    raw: bytes
    status: Literal["accepted", "refused"] = "accepted"
    reason: str | None = None
    field: str | None = None
    detail: str | None = None
    site_id: str | None = None
    topic: str | None = None  # accepted: where it goes
    ts: int | None = None
    gateway: str | None = None
    sensors: list[str] = dataclasses.field(default_factory=list)  # accepted: the sensors it carries

    def as_result(self) -> dict:
        """The per-item result the HTTP API returns."""
        if self.status == "accepted":
            return {"index": self.index, "status": "accepted"}
        return {
            "index": self.index,
            "status": "refused",
            "reason": self.reason,
            "field": self.field,
            "detail": self.detail,
        }


def split_body(body: bytes, ndjson: bool = False) -> list[tuple[bytes, Any]]:
    """The items of a body: one object, a JSON array, or NDJSON lines; each as (bytes, parsed or None)."""
    if not ndjson:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            if b"\n" not in body.strip():
                return [(body, None)]
        else:
            if isinstance(obj, list):
                return [(orjson.dumps(x), x) for x in obj]
            return [(body, obj)]
    # Each line's own bytes (less a CR) are what a refusal keeps; blank lines are no items.
    return [(line, None) for line in (raw.rstrip(b"\r") for raw in body.split(b"\n")) if line.strip()]


def check(
    index: int,
    raw: bytes,
    obj: Any,
    *,
    enterprise_id: str,
    registry: Registry,
    now_ms: int,
    future_ms: int,
    topic_prefix: str = "",
    topic_site: str | None = None,
    sensor_site: Mapping[str, str] | None = None,
) -> Outcome:
    """Accept or refuse one item sent by `enterprise_id` (`topic_site`: the site an MQTT topic names).

    `sensor_site` (sensor id → site id, built once by the caller) spares a model attribute read per reading."""
    out = Outcome(index, raw)
    if obj is None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _refuse(out, "malformed_json", "<message>", f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return _refuse(out, "malformed_message", "<message>", f"expected a JSON object, got {type(obj).__name__}")
    site_id = obj.get("site_id")
    if not isinstance(site_id, str) or not site_id:
        return _refuse(out, "invalid_field", "site_id", "site_id: a non-empty string is required")
    out.site_id = site_id[:128]
    site = registry.sites.get(site_id)
    if site is None:
        return _refuse(out, "unknown_site", "site_id", f"site_id: no site {site_id[:128]!r} in the registry")
    if site.enterprise_id != enterprise_id:
        return _refuse(
            out, "not_authorised", "site_id", f"site_id: {site_id} is not a site of enterprise {enterprise_id}"
        )
    if topic_site is not None and topic_site != site_id:
        return _refuse(out, "topic_mismatch", "site_id", f"site_id: {site_id} sent on the topic of site {topic_site}")
    ts = obj.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        if 0 < ts < SECONDS_BELOW:
            return _refuse(
                out,
                "ts_in_seconds",
                "ts",
                f"ts: {ts} looks like epoch seconds; ts must be epoch milliseconds UTC (e.g. {ts * 1000})",
            )
        if ts > now_ms + future_ms:
            ahead = (ts - now_ms) / 1000
            return _refuse(
                out,
                "future",
                "ts",
                f"ts: {ts} is {ahead:,.0f} s ahead of the gateway's clock (tolerance {future_ms / 1000:g} s)"
                + ts_hint(ts),
            )
    try:
        msg: Frame | Reading = Frame.model_validate(obj) if "readings" in obj else Reading.model_validate(obj)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        return _refuse(
            out, "invalid_field", ".".join(str(p) for p in loc) or "<message>", describe_validation_error(exc)
        )
    if isinstance(msg, Frame):
        sensors = [r.sensor_id for r in msg.readings]
        out.gateway = msg.gateway
    else:
        sensors = [msg.sensor_id]
    if sensor_site is None:
        sensor_site = {k: v.site_id for k, v in registry.sensors.items()}
    for i, sensor_id in enumerate(sensors):
        if sensor_site.get(sensor_id) != site_id:
            where = f"readings.{i}.sensor_id" if isinstance(msg, Frame) else "sensor_id"
            return _refuse(out, "unknown_sensor", where, f"{where}: {sensor_id!r} is not a sensor of site {site_id}")
    out.ts = msg.ts
    out.sensors = sensors
    out.topic = telemetry_topic(site.sector, topic_prefix)
    return out


def _refuse(out: Outcome, reason: str, where: str, detail: str) -> Outcome:
    out.status, out.reason, out.field, out.detail = "refused", reason, where, detail
    return out
