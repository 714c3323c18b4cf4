"""What every package needs and nothing of ours: settings, sector ids, topic names, logging.

A leaf: it imports no other safewatch package, so `sensors/`, `rules/`, `streams/`, `alerts/`
and the `safewatch/` shell may all import it and the arrows still run one way.
"""
