"""Sector ids and topic names: defined once, here."""

from __future__ import annotations

from typing import Literal, get_args

Sector = Literal["hazchem", "mine", "dust", "ammonia", "steel", "casting"]
SECTORS: tuple[str, ...] = get_args(Sector)

HAZARDS_TOPIC = "hazards"
INCIDENTS_TOPIC = "incidents"
NOTICES_TOPIC = "notices"  # maintenance notices: a site's instrument hazards gathered, keyed by site_id
DEADLETTER_TOPIC = "deadletter"
CHECKPOINT_TOPIC = "safewatch.rulestate"  # rule state per site, and the scope stage's per scope key
# Correlation's second stage: stage-1 hazard and incident events re-keyed by scope key (a
# repartition topic, as Kafka Streams makes for a re-keyed aggregation), and enterprise risk colours.
SCOPE_TOPIC = "correlation.scope"
RISK_TOPIC = "risk"  # compacted, keyed by enterprise id
# Enterprise tokens of the ingest gateway: compacted, keyed by token id (ingest/token_topic.py).
TOKENS_TOPIC = "enterprise-tokens"


def telemetry_topic(sector: str, prefix: str = "") -> str:
    """The telemetry topic of a sector id, with the deployment's topic prefix."""
    return f"{prefix}telemetry.{sector}"


TELEMETRY_TOPICS = tuple(telemetry_topic(s) for s in SECTORS)
