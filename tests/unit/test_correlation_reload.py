"""Correlation rules change without a restart; a broken file keeps the previous rules."""

from __future__ import annotations

import shutil

from config.settings import Settings
from rules.engine import RuleEngine
from rules.patterns import CORRELATION_DIR
from sensors.registry import load_registry
from streams.reload import RuleReloader, reload_correlation
from streams.scope_stage import emitted_scopes

BROKEN = "rules:\n  - id: t.broken\n    kind: sequence\n    scope: site\n"


def test_changed_correlation_rules_apply_and_broken_ones_are_refused(tmp_path):
    folder = tmp_path / "correlation"
    shutil.copytree(CORRELATION_DIR, folder)
    settings = Settings(correlation_dir=folder, rules_reload_s=0, state_dir=tmp_path / "state")
    reloader = RuleReloader(settings)
    registry = load_registry(settings.registry)
    catalog, windows = reloader.initial(registry)
    engine = RuleEngine(registry, catalog, maintenance=windows, correlation_rules=reloader.correlation(catalog))
    assert "mine.tailings_flood" in engine.site_rules["mine"].by_id

    (folder / "mine.yaml").unlink()
    reloader.maybe_reload(engine)
    assert "mine.tailings_flood" not in engine.site_rules["mine"].by_id
    assert "correlation.site_coactive" in engine.site_rules["mine"].by_id

    (folder / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    reloader.maybe_reload(engine)  # refused: the rules of the last good load stay
    assert "correlation.site_coactive" in engine.site_rules["mine"].by_id
    assert "t.broken" not in engine.site_rules["mine"].by_id


def test_the_scope_stage_reloads_regional_rules_and_keeps_them_on_errors(tmp_path):
    folder = tmp_path / "correlation"
    shutil.copytree(CORRELATION_DIR, folder)
    settings = Settings(correlation_dir=folder, state_dir=tmp_path / "state")
    seen, rules = reload_correlation(settings, None)
    assert rules is not None and "region.county_rainstorm_ponds" in {r.id for r in rules}
    assert reload_correlation(settings, seen) == (seen, None)  # nothing changed: nothing loaded

    (folder / "regional.yaml").unlink()
    seen, rules = reload_correlation(settings, seen)
    assert rules is not None and not any(r.scope in ("county", "city") for r in rules)

    (folder / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    seen, rules = reload_correlation(settings, seen)
    assert rules is None  # refused: the stage keeps what it has
    assert reload_correlation(settings, seen) == (seen, None)  # and does not retry the same files


def test_the_worker_re_keys_the_scope_levels_its_reloaded_rules_need(tmp_path):
    folder = tmp_path / "correlation"
    shutil.copytree(CORRELATION_DIR, folder)
    settings = Settings(correlation_dir=folder, rules_reload_s=0, state_dir=tmp_path / "state", risk_enabled=False)
    reloader = RuleReloader(settings)
    registry = load_registry(settings.registry)
    catalog, windows = reloader.initial(registry)
    engine = RuleEngine(registry, catalog, maintenance=windows, correlation_rules=reloader.correlation(catalog))
    assert set(emitted_scopes(settings, reloader.correlation_rules)) == {"enterprise", "county", "city"}
    before = reloader.correlation_rules
    (folder / "regional.yaml").unlink()
    reloader.maybe_reload(engine)
    assert reloader.correlation_rules is not before
    assert emitted_scopes(settings, reloader.correlation_rules) == []
