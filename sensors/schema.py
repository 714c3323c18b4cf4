"""The telemetry contract: one reading, or a frame of one gateway's readings at one tick.

Wire format is JSON. Event time `ts` is epoch milliseconds (UTC) — an integer, cheap to
compare and free of time-zone ambiguity. A message with a `readings` list is a frame.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Quality = Literal["good", "uncertain", "bad"]
# Finite only: NaN or ±inf from a broken transmitter is bad input, not a value.
FiniteValue = Annotated[float, Field(allow_inf_nan=False, strict=True)]
EpochMs = Annotated[int, Field(gt=0, lt=32503680000000, strict=True)]  # before year 3000
Ident = Annotated[str, Field(min_length=1, max_length=128, strict=True)]


class FrameReading(BaseModel):
    """One point inside a frame; site and time come from the frame."""

    model_config = ConfigDict(extra="forbid")
    sensor_id: Ident
    value: FiniteValue
    quality: Quality = "good"
    seq: int | None = None


class Reading(BaseModel):
    """One sensor's value at one event time."""

    model_config = ConfigDict(extra="forbid")
    site_id: Ident
    sensor_id: Ident
    ts: EpochMs
    value: FiniteValue
    quality: Quality = "good"
    seq: int | None = None


class Frame(BaseModel):
    """The readings of one site's gateway at one tick: the normal, fast path."""

    model_config = ConfigDict(extra="forbid")
    site_id: Ident
    ts: EpochMs
    gateway: Ident | None = None
    readings: list[FrameReading] = Field(min_length=1)


_frame_adapter = TypeAdapter(Frame)
_reading_adapter = TypeAdapter(Reading)


class DecodeError(ValueError):
    """A telemetry message that cannot be used; `reason` is short and machine-readable."""

    def __init__(self, reason: str, detail: str, *, site_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.site_id = site_id


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """Name each bad field by its path, e.g. `readings.3.value: Input should be finite`."""
    parts = []
    for err in exc.errors()[:limit]:
        path = ".".join(str(p) for p in err["loc"]) or "<message>"
        parts.append(f"{path}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def decode_message(raw: bytes) -> Frame | Reading:
    """Parse and validate one telemetry message; raises DecodeError naming the bad field."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise DecodeError("malformed_message", f"expected a JSON object, got {type(obj).__name__}")
    site = obj.get("site_id") if isinstance(obj.get("site_id"), str) else None
    try:
        if "readings" in obj:
            return _frame_adapter.validate_python(obj)
        return _reading_adapter.validate_python(obj)
    except ValidationError as exc:
        raise DecodeError("invalid_field", describe_validation_error(exc), site_id=site) from None


# --- the hot path -------------------------------------------------------------------------------
# The same contract as the pydantic models above, as msgspec structs: decoding a valid message
# this way costs a fifth of validating it with pydantic, which was most of a single-reading
# message's cost in the worker. Only acceptance is taken from here: whatever these refuse goes
# through `decode_message`, whose errors name the field (tests/unit/test_schema_fast.py checks
# with hypothesis that what these accept, the models accept with the same values).
_FastIdent = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_FastEpochMs = Annotated[int, msgspec.Meta(gt=0, lt=32503680000000)]
# pydantic takes an integer that fits i64 or u64 and refuses a bigger one; msgspec takes any size
# but bounds only within i64, so a `seq` past 2**63 - 1 takes the slow path (which decides).
_FastSeq = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class FastFrameReading(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`FrameReading`, decoded by msgspec."""

    sensor_id: _FastIdent
    value: float
    quality: Quality = "good"
    seq: _FastSeq | None = None


class FastReading(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`Reading`, decoded by msgspec."""

    site_id: _FastIdent
    sensor_id: _FastIdent
    ts: _FastEpochMs
    value: float
    quality: Quality = "good"
    seq: _FastSeq | None = None


class FastFrame(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`Frame`, decoded by msgspec."""

    site_id: _FastIdent
    ts: _FastEpochMs
    readings: Annotated[list[FastFrameReading], msgspec.Meta(min_length=1)]
    gateway: _FastIdent | None = None


_fast_frame = msgspec.json.Decoder(FastFrame)
# Public for a caller's own loop over many messages (the worker's hot path); decode_fast otherwise.
FAST_READING = msgspec.json.Decoder(FastReading)


def decode_fast(raw: bytes) -> FastFrame | FastReading | None:
    """A valid message, decoded cheaply; None for anything else (then use `decode_message`)."""
    # msgspec has no untagged unions of objects: a frame is what has a `readings` key, as in
    # decode_message; a `"readings"` that is a value (a sensor so named) fails as a frame and is
    # then tried as a reading, which refuses a `readings` key. msgspec refuses NaN/inf literals
    # and numbers out of float range, so values are finite.
    if b'"readings"' in raw:
        try:
            return _fast_frame.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    try:
        return FAST_READING.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def split_frame(obj: dict) -> tuple[Frame | None, list[tuple[dict, str]]]:
    """Validate a frame reading by reading: the good ones as a Frame, the bad ones with reasons.

    Used when a whole frame fails validation, so one bad point does not drop its neighbours.
    When the frame's own fields (site, time) are bad it returns `(None, [])`: nothing in it
    can be trusted, and the caller dead-letters the message whole.
    """
    head = {k: v for k, v in obj.items() if k != "readings"}
    try:
        Frame.model_validate({**head, "readings": [{"sensor_id": "-", "value": 0.0}]})
    except ValidationError:
        return None, []
    good: list[FrameReading] = []
    bad: list[tuple[dict, str]] = []
    for i, item in enumerate(obj.get("readings") or []):
        try:
            good.append(FrameReading.model_validate(item))
        except ValidationError as exc:
            bad.append((item, f"readings.{i}." + describe_validation_error(exc)))
    frame = Frame.model_validate({**head, "readings": good}) if good else None
    return frame, bad


def encode(msg: Frame | Reading) -> bytes:
    """JSON bytes of a reading or frame (None fields left out)."""
    return orjson.dumps(msg.model_dump(exclude_none=True))
