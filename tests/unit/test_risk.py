"""Enterprise risk colour (rules/risk.py): the table of docs/scope-stage.md."""

from __future__ import annotations

import pytest

from rules.risk import colour, risk_change
from rules.scope import ScopeEngine, ScopeState
from tests.unit.test_scope import T0, entry, rec


@pytest.mark.parametrize(
    ("incidents", "hazards", "cls", "expected"),
    [
        ([], [], "C", "blue"),
        ([], [], "D", "blue"),  # nothing open: class D is not raised
        ([], ["yellow"], "C", "blue"),  # a hazard alone: one colour below its own
        ([], ["red"], "C", "orange"),
        ([], ["yellow"], "D", "yellow"),  # class D: one up while anything is open
        (["yellow"], ["red"], "C", "orange"),  # the red hazard alone weighs more than the yellow incident
        (["orange"], [], "C", "orange"),
        (["orange", "yellow"], [], "C", "red"),  # two incidents open: one up
        (["red"], ["red"], "D", "red"),  # capped
        (["blue"], [], "A", "blue"),
    ],
)
def test_colour_table(incidents, hazards, cls, expected):
    assert colour(incidents, hazards, cls)[0] == expected


def test_risk_changes_only_when_the_colour_changes():
    st = ScopeState()
    first = risk_change("E1", st, "C", T0)
    assert first is not None and first.colour == "blue" and first.reason == "nothing open"
    assert risk_change("E1", st, "C", T0 + 1) is None
    eng = ScopeEngine([])
    inc = entry("INC-1", "site-a", start=T0, event="incident", severity="orange")
    eng.feed(rec(inc, scope="enterprise"))
    st = eng.states["enterprise:E1"]
    r = risk_change("E1", st, "C", T0 + 2)
    assert (r.colour, r.open_incidents, r.open_hazards) == ("orange", 1, 0)
    eng.feed(rec(inc, "clear", scope="enterprise", ts=T0 + 3))
    assert risk_change("E1", st, "C", T0 + 3).colour == "blue"
    assert st.risk == "blue" and ScopeState.from_dict(st.to_dict()).risk == "blue"  # checkpointed with the state
