"""Child `safewatch` processes (worker, alert service) run by the demo and the bench, and a look at their metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def spawn_safewatch(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start `python -m safewatch ARGS` detached from our terminal, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "safewatch", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it outlives `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settings_env(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """`base` plus every setting as its `SAFEWATCH_*` variable, so a child sees what we see."""
    return {**base, **{f"SAFEWATCH_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None}}


def worker_metrics(settings: Settings, port: int | None = None) -> dict[str, float]:
    """A worker's Prometheus counters, summed over labels (empty if it is not up yet)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port or settings.worker_web_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    out: defaultdict[str, float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("safewatch_") and s.name.endswith("_total"):
                out[s.name] += s.value
    return dict(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of a process and of its children alive now (the alert service's consumer process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(c)) for c in children)
