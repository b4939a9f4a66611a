"""A real PostgreSQL server for the tests: initdb and pg_ctl in a temp folder, on loopback.

initdb refuses root, so as root the server runs as the `postgres` user. Without PostgreSQL's
tools the tests that need it skip, except in CI (.ci/run installs them), where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER, PASSWORD, DATABASE = "ptm", "tune-secret", "studies"


def _tool(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if isinstance(found, list):
        return found[-1] if found else None
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """initdb + pg_ctl start in a temp folder; url(); stop() removes everything."""

    def __init__(self):
        tools = {name: _tool(name) for name in ("initdb", "pg_ctl")}
        if not all(tools.values()):
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL's initdb and pg_ctl are missing (.ci/run installs postgresql)")
            pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
        self.tools = tools
        self.folder = Path(tempfile.mkdtemp(prefix="ptm-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        (self.folder / "pw").write_text(PASSWORD)
        if self.as_user:
            shutil.chown(self.folder, "postgres")
            shutil.chown(self.folder / "pw", "postgres")
        data = self.folder / "data"
        self._run(tools["initdb"], "-D", data, "-U", USER, "--pwfile", self.folder / "pw",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8")  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.folder}"
        self._run(tools["pg_ctl"], "-D", data, "-o", options, "-l", self.folder / "log", "-w", "start")
        self.create_database(DATABASE)

    def create_database(self, name: str) -> str:
        """A new database on the server; its URL."""
        psql = _tool("psql") or "psql"
        self._run(psql, "-h", self.folder, "-p", self.port, "-U", USER, "-d", "postgres", "-c",
                  f"CREATE DATABASE {name}")  # fmt: skip
        return self.url(database=name)

    def _run(self, *args) -> None:
        done = subprocess.run([*self.as_user, *map(str, args)], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed: {done.stderr or done.stdout}")

    def url(self, password: str = PASSWORD, database: str = DATABASE) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.tools["pg_ctl"]), "-D", str(self.folder / "data"),
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
