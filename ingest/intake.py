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
from sensors.schema import FastFrame, Frame, Reading, decode_fast, describe_validation_error

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
        stripped = body.strip()
        if stripped[:1] == b"{" and b"\n" not in stripped:
            # One object (an MQTT message, a single frame): `check` decodes it, so parsing it here
            # as well would only double the cost of the common case.
            return [(body, None)]
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
    site_sensors: Mapping[str, frozenset[str]] | None = None,
) -> Outcome:
    """Accept or refuse one item sent by `enterprise_id` (`topic_site`: the site an MQTT topic names).

    `sensor_site` (sensor id → site id) and `site_sensors` (site id → its sensor ids), built once by
    the caller, spare a model attribute read and a dictionary look-up per reading."""
    out = Outcome(index, raw)
    ctx = _Context(enterprise_id, registry, now_ms, future_ms, topic_prefix, topic_site, sensor_site, site_sensors)
    # A valid item is decoded by msgspec (a fifth of pydantic's cost); anything it refuses takes the
    # slow path below, whose checks name the field.
    fast = decode_fast(raw)
    if fast is not None:
        frame = isinstance(fast, FastFrame)
        sensors = [r.sensor_id for r in fast.readings] if isinstance(fast, FastFrame) else [fast.sensor_id]
        refused = _site(out, fast.site_id, ctx) or _time(out, fast.ts, ctx) or _sensors(out, sensors, frame, ctx)
        return refused or _accept(out, fast.ts, sensors, fast.gateway if isinstance(fast, FastFrame) else None, ctx)
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
    ts = obj.get("ts")
    refused = _site(out, site_id, ctx) or (_time(out, ts, ctx) if isinstance(ts, int) else None)
    if refused:
        return refused
    try:
        msg: Frame | Reading = Frame.model_validate(obj) if "readings" in obj else Reading.model_validate(obj)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "<message>"
        return _refuse(out, "invalid_field", where, describe_validation_error(exc))
    # Only what msgspec would take differently (say a big integer value) gets here valid.
    if isinstance(msg, Frame):
        sensors = [r.sensor_id for r in msg.readings]
        return _sensors(out, sensors, True, ctx) or _accept(out, msg.ts, sensors, msg.gateway, ctx)
    return _sensors(out, [msg.sensor_id], False, ctx) or _accept(out, msg.ts, [msg.sensor_id], None, ctx)


@dataclass
class _Context:
    enterprise_id: str
    registry: Registry
    now_ms: int
    future_ms: int
    topic_prefix: str
    topic_site: str | None
    sensor_site: Mapping[str, str] | None
    site_sensors: Mapping[str, frozenset[str]] | None


def _site(out: Outcome, site_id: str, ctx: _Context) -> Outcome | None:
    """Refused unless the site exists, is the sender's, and (MQTT) is the topic's."""
    out.site_id = site_id[:128]
    site = ctx.registry.sites.get(site_id)
    if site is None:
        return _refuse(out, "unknown_site", "site_id", f"site_id: no site {site_id[:128]!r} in the registry")
    if site.enterprise_id != ctx.enterprise_id:
        detail = f"site_id: {site_id} is not a site of enterprise {ctx.enterprise_id}"
        return _refuse(out, "not_authorised", "site_id", detail)
    if ctx.topic_site is not None and ctx.topic_site != site_id:
        return _refuse(
            out, "topic_mismatch", "site_id", f"site_id: {site_id} sent on the topic of site {ctx.topic_site}"
        )
    return None


def _time(out: Outcome, ts: int, ctx: _Context) -> Outcome | None:
    """Refused if ts looks like seconds, or is ahead of our clock beyond the tolerance."""
    if isinstance(ts, bool):
        return None  # not a time at all: the schema says so
    if 0 < ts < SECONDS_BELOW:
        detail = f"ts: {ts} looks like epoch seconds; ts must be epoch milliseconds UTC (e.g. {ts * 1000})"
        return _refuse(out, "ts_in_seconds", "ts", detail)
    if ts > ctx.now_ms + ctx.future_ms:
        ahead = (ts - ctx.now_ms) / 1000
        detail = f"ts: {ts} is {ahead:,.0f} s ahead of the gateway's clock (tolerance {ctx.future_ms / 1000:g} s)"
        return _refuse(out, "future", "ts", detail + ts_hint(ts))
    return None


def _sensors(out: Outcome, sensors: list[str], frame: bool, ctx: _Context) -> Outcome | None:
    """Refused unless every sensor is one of the site's."""
    known = ctx.site_sensors.get(out.site_id or "") if ctx.site_sensors is not None else None
    if known is not None and known.issuperset(sensors):  # one C-level pass for the common case
        return None
    sensor_site = ctx.sensor_site
    if sensor_site is None:
        sensor_site = {k: v.site_id for k, v in ctx.registry.sensors.items()}
    for i, sensor_id in enumerate(sensors):
        if sensor_site.get(sensor_id) != out.site_id:
            where = f"readings.{i}.sensor_id" if frame else "sensor_id"
            return _refuse(
                out, "unknown_sensor", where, f"{where}: {sensor_id!r} is not a sensor of site {out.site_id}"
            )
    return None


def _accept(out: Outcome, ts: int, sensors: list[str], gateway: str | None, ctx: _Context) -> Outcome:
    out.ts, out.sensors, out.gateway = ts, sensors, gateway
    assert out.site_id is not None
    out.topic = telemetry_topic(ctx.registry.sites[out.site_id].sector, ctx.topic_prefix)
    return out


def _refuse(out: Outcome, reason: str, where: str, detail: str) -> Outcome:
    out.status, out.reason, out.field, out.detail = "refused", reason, where, detail
    return out
