"""Time ranges as inspectors type them, and times shown in local time with the zone."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^-?(\d+)([smhdw])$")
# The longest range one query may ask for: past the 1-hour roll-ups' default retention nothing is left.
MAX_SPAN_MS = 5 * 366 * 86400 * 1000


class RangeError(ValueError):
    """A time or range that cannot be used; the message says why and what is accepted."""


def now_ms() -> int:
    """Wall-clock time, epoch ms."""
    return int(time.time() * 1000)


def duration_s(text: str) -> int:
    """`30d`, `12h`, `90m`, `INF` (InfluxDB's forever, as 0) → seconds."""
    if text.upper() == "INF":
        return 0
    total, rest = 0, text
    for num, unit in re.findall(r"(\d+)([smhdw])", text):
        total += int(num) * _UNITS[unit]
        rest = rest.replace(num + unit, "", 1)
    if rest or not total:
        raise RangeError(f"bad duration {text!r}: use e.g. 30d, 12h, 90m, 1w")
    return total


def parse_time(text: str, tz: ZoneInfo, now: int) -> int:
    """`now`, `7d` / `-7d` (that long ago), `2026-12-01` (local midnight), an ISO time (local if no offset)."""
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)] * 1000
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=tz)
        else:
            dt = datetime.fromisoformat(text.replace(" ", "T", 1))
            dt = dt if dt.tzinfo else dt.replace(tzinfo=tz)
    except ValueError:
        raise RangeError(
            f"bad time {text!r}: use now, 7d (ago), 2026-12-01, 2026-12-01T08:00 (local) or with an offset"
        ) from None
    return int(dt.timestamp() * 1000)


def parse_range(since: str | None, until: str | None, tz: ZoneInfo, now: int | None = None) -> tuple[int, int]:
    """[start, end) in epoch ms; default the last 7 days. Refuses an empty, inverted or too long range."""
    now = now_ms() if now is None else now
    end = parse_time(until, tz, now) if until else now
    start = parse_time(since, tz, now) if since else end - 7 * 86400 * 1000
    if start >= end:
        raise RangeError(f"empty range: since {local(start, tz)} is not before until {local(end, tz)}")
    if end - start > MAX_SPAN_MS:
        raise RangeError("range longer than 5 years: nothing is kept that long")
    return start, end


def local(ms: int | None, tz: ZoneInfo) -> str | None:
    """ISO 8601 local time with its offset, e.g. 2026-12-03T14:05:01+08:00."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds")


def local_day(ms: int, tz: ZoneInfo) -> str:
    """The local calendar day of a time."""
    return datetime.fromtimestamp(ms / 1000, tz).date().isoformat()


def days(start: int, end: int, tz: ZoneInfo) -> list[str]:
    """Every local day the range touches."""
    d, last = datetime.fromtimestamp(start / 1000, tz).date(), datetime.fromtimestamp((end - 1) / 1000, tz).date()
    out = []
    while d <= last:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out
