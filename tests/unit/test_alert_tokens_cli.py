"""`safewatch alerts token issue|list|revoke` as a user runs them, against a real store file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alerts.auth import authenticate
from alerts.store import TaskStore


def safewatch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAFEWATCH_STATE_DIR": str(tmp_path), "SAFEWATCH_ALERTS_DB": str(tmp_path / "a.sqlite3")}
    return subprocess.run(
        [sys.executable, "-m", "safewatch", "alerts", "token", *args], env=env, capture_output=True, text=True
    )


def test_issue_list_revoke(tmp_path: Path):
    issued = safewatch(tmp_path, "issue", "Suzhou duty desk", "--role", "duty_officer")
    assert issued.returncode == 0, issued.stderr
    secret = issued.stdout.strip()  # the secret alone on stdout
    assert secret.startswith("swt_") and "\n" not in secret
    token_id = issued.stderr.split()[1]
    store = TaskStore(tmp_path / "a.sqlite3")
    assert authenticate(store, secret).name == "Suzhou duty desk"

    listed = safewatch(tmp_path, "list")
    assert token_id in listed.stdout and "duty_officer" in listed.stdout and secret not in listed.stdout

    assert safewatch(tmp_path, "revoke", token_id).returncode == 0
    assert authenticate(store, secret) is None
    again = safewatch(tmp_path, "revoke", token_id)
    assert again.returncode == 1 and "no live token" in again.stderr
    store.close()


def test_enterprise_token_needs_its_enterprise(tmp_path: Path):
    refused = safewatch(tmp_path, "issue", "operator", "--role", "enterprise")
    assert refused.returncode == 1 and "--enterprise" in refused.stderr
    ok = safewatch(tmp_path, "issue", "operator", "--role", "enterprise", "--enterprise", "91320583MA1XXXXXX0")
    assert ok.returncode == 0
