"""A throwaway PostgreSQL cluster from Debian's `postgresql` binaries, for the tests and the alert bench.

initdb into a temporary folder, one postmaster on a free loopback port with its unix socket in
that folder, trust authentication (loopback only), removed on stop. PostgreSQL refuses to run
as root, so under root the cluster belongs to the `postgres` user the package creates.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_ROOT = Path("/usr/lib/postgresql")


def pg_bin_dir() -> Path | None:
    """The newest installed server's bin folder (/usr/lib/postgresql/N/bin), or None."""
    found = [d / "bin" for d in PG_ROOT.glob("*") if (d / "bin" / "postgres").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


class TempPostgres:
    """One throwaway cluster; `start()` returns its URL, `new_schema()` the URL of a fresh, empty schema."""

    def __init__(self, bin_dir: Path | None = None, *, fsync: bool = True) -> None:
        found = bin_dir or pg_bin_dir()
        if found is None:
            raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql: run `safewatch stack install`")
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="safewatch-pg-"))
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._names = itertools.count(1)
        # Tests may turn fsync off: no power loss to survive, and less disk work on a shared machine.
        self.fsync = fsync
        # Root may not run the server: it runs as `postgres`, which must own (and reach) the folder.
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
            self.root.chmod(0o700)

    @property
    def url(self) -> str:
        """The cluster's `postgres` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        # setpriv execs the command itself (no forking wrapper), so our pid is the postmaster's.
        return ["setpriv", f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}", "--init-groups", *argv]

    def start(self, timeout_s: float = 60.0) -> str:
        """initdb, start the postmaster and wait until it answers; returns the URL."""
        data, log = self.root / "data", self.root / "postgres.log"
        subprocess.run(
            self._as_owner([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"])
            + ["--locale=C", "--no-sync"],
            check=True,
            capture_output=True,
        )
        self.port = _free_port()
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                self._as_owner([str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port)])
                + [
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"fsync={'on' if self.fsync else 'off'}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return self.url
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start; see {log}") from None
                time.sleep(0.1)

    def new_schema(self) -> str:
        """Create an empty schema; returns a URL whose connections work in it (a schema is far
        cheaper than a database: no 7 MB template copy per test)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        """Fast shutdown, then remove the cluster's folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, checkpoints, exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

    def __enter__(self) -> TempPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
