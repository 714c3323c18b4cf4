"""Each sector's scenario file through `safewatch replay`: exactly the hazards its design says.

The files and their generator are in tests/data/scenarios/; `<sector>.expected.yaml` lists the
hazards the scenario design requires (written by hand, not copied from the engine), those that
must not appear, and the few incidental ones that may. Anything else opened fails the test.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import orjson
import pytest
import yaml

from config.topics import SECTORS
from rules.catalog import load_catalog
from rules.replay import replay_file
from sensors.registry import load_registry

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"


@cache
def registry():
    return load_registry()


@cache
def catalog():
    return load_catalog()


def expected(sector: str) -> dict:
    doc = yaml.safe_load((SCENARIOS / f"{sector}.expected.yaml").read_text(encoding="utf-8"))
    assert doc["sector"] == sector
    return doc


def pairs(entries: list[dict]) -> set[tuple[str, str]]:
    return {(e["subject"], e["kind"]) for e in entries}


def replay_events(sector: str, out: Path, **kw) -> list[dict]:
    """Every event of one replay of the sector's file."""
    report = replay_file(SCENARIOS / f"{sector}.jsonl", registry(), out, catalog=catalog(), **kw)
    assert not report.refused.get("late") and not report.refused.get("unknown_sensor"), report.refused
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def replay(sector: str, out: Path, **kw) -> list[dict]:
    """The hazard events of one replay of the sector's file."""
    return [e for e in replay_events(sector, out, **kw) if e["type"] == "hazard"]


def incident_outcomes(events: list[dict]) -> list[tuple[str, str, str, frozenset]]:
    """Each incident as it ended: (site, naming rule, colour, rules that matched on it), sorted."""
    last: dict[str, dict] = {}
    for e in events:
        if e["type"] == "incident":
            last[e["incident_id"]] = e
    out = []
    for e in last.values():
        matched = frozenset(t["what"].split(" ")[1] for t in e["timeline"] if t["what"].startswith("rule "))
        out.append((e["site_id"], e["rule_id"], e["severity"], matched))
    return sorted(out, key=lambda x: x[:3])


def check_incidents(doc: dict, outcomes: list[tuple[str, str, str, frozenset]]) -> None:
    """The designed incidents, no more, no fewer; each with the rules it must have matched."""
    want = sorted((i["site"], i["rule"], i["severity"]) for i in doc["incidents"])
    assert [o[:3] for o in outcomes] == want
    for i in doc["incidents"]:
        mine = [o for o in outcomes if o[:3] == (i["site"], i["rule"], i["severity"])]
        assert any(set(i.get("matched", [])) <= o[3] for o in mine), (i, mine)


def subject(e: dict) -> str:
    """The sensor a hazard is about, or its site for site-level hazards."""
    return e["sensor_id"] or e["site_id"]


def opened(hazards: list[dict]) -> set[tuple[str, str]]:
    return {(subject(e), e["kind"]) for e in hazards if e["event"] == "open"}


# The default batching (one batch holds a whole file here) and one frame per batch, as a live worker may see it.
@pytest.mark.parametrize("batch_size", [None, 1], ids=["default-batches", "frame-by-frame"])
@pytest.mark.parametrize("sector", SECTORS)
def test_replay_opens_exactly_the_designed_hazards(sector, batch_size, tmp_path):
    doc = expected(sector)
    hazards = replay(sector, tmp_path / "out.jsonl", **({"batch_size": batch_size} if batch_size else {}))
    got = opened(hazards)
    want = pairs(doc["expected"])
    assert want - got == set(), "expected hazards that did not open"
    seen = {(subject(e), e["kind"]) for e in hazards}
    assert seen & pairs(doc["must_not"]) == set(), "hazards that must not appear"
    assert got - want - pairs(doc["also_allowed"]) == set(), "hazards nobody designed"
    flapping = {(subject(e), e["kind"]) for e in hazards if e["flapping"]}
    assert pairs([e for e in doc["expected"] if e.get("flapping")]) <= flapping, "expected flapping"


@pytest.mark.parametrize("batch_size", [None, 1], ids=["default-batches", "frame-by-frame"])
@pytest.mark.parametrize("sector", SECTORS)
def test_replay_gives_exactly_the_designed_incidents(sector, batch_size, tmp_path):
    events = replay_events(sector, tmp_path / "out.jsonl", **({"batch_size": batch_size} if batch_size else {}))
    check_incidents(expected(sector), incident_outcomes(events))


@pytest.mark.parametrize("sector", SECTORS)
def test_replay_is_deterministic(sector, tmp_path):
    assert replay(sector, tmp_path / "a.jsonl"), f"the {sector} replay emitted no hazard"
    replay(sector, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize("sector", SECTORS)
def test_replay_does_not_depend_on_batch_size(sector, tmp_path):
    """The worker sees small batches, replay large ones (DESIGN: identical results): one frame per
    batch must open the same hazards as the default batching."""
    whole = replay(sector, tmp_path / "whole.jsonl")
    framewise = replay(sector, tmp_path / "one.jsonl", batch_size=1)
    a, b = transitions(whole), transitions(framewise)
    assert a, f"the {sector} replay emitted no hazard"
    assert (a - b, b - a) == (set(), set())


def transitions(hazards: list[dict]) -> set[tuple]:
    return {(subject(e), e["kind"], e["event"], e["start"]) for e in hazards}


def test_expected_files_are_well_formed():
    for sector in SECTORS:
        doc = expected(sector)
        assert set(doc) == {"sector", "expected", "must_not", "also_allowed", "incidents"}, sector
        assert not pairs(doc["expected"]) & pairs(doc["must_not"]), sector
        assert not pairs(doc["also_allowed"]) & pairs(doc["must_not"]), sector


def test_files_are_what_the_generator_makes(tmp_path):
    """A simulator change that alters the committed files means: regenerate and re-check the design."""
    spec = importlib.util.spec_from_file_location("make_scenarios", SCENARIOS / "make_scenarios.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for sector in SECTORS:
        made = gen.write(sector, registry(), tmp_path)
        committed = SCENARIOS / f"{sector}.jsonl"
        assert made.read_bytes() == committed.read_bytes(), f"{committed} is stale: run make_scenarios.py"
        assert committed.stat().st_size < 1_000_000
