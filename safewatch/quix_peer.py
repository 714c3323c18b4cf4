"""The per-message peer `safewatch bench --quix-python` compares the worker with: a Quix Streams
application that decodes each JSON reading and checks it against a threshold, nothing else.

Run as a script by an interpreter that has `quixstreams` (its pins, pydantic < 2.14 in 3.28, conflict
with safewatch's, so it lives in a venv of its own); it imports nothing of ours. It prints one JSON
line: messages counted and the rate between the first and the last of them.
"""

from __future__ import annotations

import json
import sys
import time


def main(bootstrap: str, group: str, topics: list[str], expected: int, limit: float) -> None:
    """Consume `expected` single-reading messages from `topics`; print {"messages", "per_s"}."""
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        loglevel="WARNING",
        auto_create_topics=False,
        use_changelog_topics=False,
    )
    seen = {"n": 0, "alarms": 0, "first": 0.0, "last": 0.0}

    def check(reading: dict) -> dict:
        # The same work per message as a threshold rule: one value against one set point.
        if seen["n"] == 0:
            seen["first"] = time.perf_counter()
        seen["n"] += 1
        if float(reading["value"]) > limit:
            seen["alarms"] += 1
        if seen["n"] >= expected:
            seen["last"] = time.perf_counter()
            app.stop()
        return reading

    for name in topics:
        app.dataframe(app.topic(name, value_deserializer="json")).update(check)
    app.run()
    span = seen["last"] - seen["first"]
    print(json.dumps({"messages": seen["n"], "per_s": (seen["n"] - 1) / span if span > 0 else 0.0}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]), float(sys.argv[5]))
