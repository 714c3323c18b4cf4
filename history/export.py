"""CSV and JSON exports of history rows."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

FORMATS = ("csv", "json")


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV with a header; nested values (lists, dicts) as JSON text."""
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: orjson.dumps(v).decode() if isinstance(v, list | dict) else v for k, v in r.items()})
    return out.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    """Rows as a JSON array."""
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows in one of FORMATS."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    return to_csv(rows) if fmt == "csv" else to_json(rows)
