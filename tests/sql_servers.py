"""A throwaway PostgreSQL server for the end-to-end tests (the Rust tests have their own in
sql-store/src/testing.rs): Debian's `postgresql` binaries on a free port of 127.0.0.1, data in a
temporary directory, durability off, stopped by PID. PostgreSQL refuses to run as root, so as
root it runs as the package's `postgres` user. Missing binaries fail the test under CI=true and
skip it elsewhere."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

import harness as h


def _bin_dir() -> Path | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name), reverse=True)
    for d in dirs:
        if Path(d, "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _missing(what: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} not found: scripts/install-test-deps installs it (CI=true: failing, not skipping)")
    pytest.skip(f"{what} not found (apt-get install postgresql)")


class Postgres:
    def __init__(self, log_dir: Path):
        bindir = _bin_dir()
        if bindir is None or not (bindir / "postgres").exists():
            _missing("PostgreSQL (initdb, postgres)")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="s3b-pg-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            if subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
                user = "nobody"
            shutil.chown(self.dir, user)
            self.prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        data = self.dir / "data"
        h.run(
            [*self.prefix, str(bindir / "initdb"), "-D", str(data), "-U", "s3balance", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            timeout=120,
        )
        self.port = h.free_port()
        self.proc = h.Proc(
            "postgres",
            [*self.prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300"],
            log_dir,
        )
        h.wait_until("postgres accepting sessions", lambda: self._ready(), 60, interval=0.2)

    def _ready(self):
        if not self.proc.alive():
            raise RuntimeError(f"postgres exited:\n{self.proc.tail()}")
        return self.psql("postgres", "SELECT 1").strip() == "1"

    def psql(self, database: str, sql: str) -> str:
        r = subprocess.run(
            [str(self.bindir / "psql"), "-h", h.HOST, "-p", str(self.port), "-U", "s3balance", "-d", database,
             "-tAX", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=30,
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr}")
        return r.stdout

    def create_database(self, name: str) -> str:
        self.psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgres://s3balance@{h.HOST}:{self.port}/{database}"

    def stop(self):
        # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for clients to leave).
        self.proc.signal(signal.SIGINT)
        self.proc.stop(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)
