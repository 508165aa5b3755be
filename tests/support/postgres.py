"""A real PostgreSQL server for the shared state store's tests (Debian's ``postgresql``).

The session fixture :func:`pg_server` makes a cluster with ``initdb`` in a
temporary folder and starts it with ``pg_ctl`` on 127.0.0.1 and a free port
(no Unix socket), and stops it when the session ends, as the sshd tests do
with their daemon. PostgreSQL refuses to run as root: as root (CI) the
cluster belongs to ``nobody`` and every server command runs as that user
(``setpriv``); as anyone else it runs as the current user.

Two roles log in over TCP: the superuser ``certfleet`` (trusted, no
password) and ``team``, whose password is :data:`TEAM_PASSWORD` (SCRAM).
:func:`pg_url` gives each test a database of its own. With ``CI=true`` a
missing ``initdb`` fails; elsewhere the tests skip.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _tools import tool_missing
from certfleet.lab.tls import free_port

__all__ = ["STORE_KEY", "TEAM_PASSWORD", "PgServer", "find_pg_bin", "pg_server", "pg_url",
           "store_backend"]

#: The password of the role ``team`` (the login tests give it as a secret reference).
TEAM_PASSWORD = "team-s3cret-pw"

#: The store key of the shared stores the tests make.
STORE_KEY = "team-store-key-0123456789abcdef"

_counter = itertools.count(1)


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    data: Path
    #: The root of the server's TLS certificate (issued for ``localhost``).
    ca_file: Path

    def url(self, database: str = "postgres", user: str = "certfleet") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database ``name`` (owned by ``team`` too); returns the superuser's URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER team')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (a test may stop and start it: see :meth:`start`)."""
        _pg_ctl(self.data, "stop", "-m", "fast")

    def start(self) -> None:
        _pg_ctl(self.data, "start", "-o", f"-p {self.port}")


def find_pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _as_server_user() -> list[str]:
    """The prefix that runs a command as the cluster's owner (nobody, when we are root)."""
    if os.name != "posix" or os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        tool_missing("setpriv (util-linux) is needed to run PostgreSQL as nobody")
    group = "nogroup" if _group_exists("nogroup") else "nobody"
    return [setpriv, "--reuid=nobody", f"--regid={group}", "--clear-groups"]


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


_BIN: Path | None = None


def _run(argv: list[str]) -> None:
    result = subprocess.run(_as_server_user() + argv, capture_output=True, text=True,
                            timeout=120, cwd="/")
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:2])} failed: {result.stdout}{result.stderr}")


def _pg_ctl(data: Path, *args: str) -> None:
    assert _BIN is not None
    _run([str(_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
          "-l", str(data.parent / "server.log"), *args])


_HBA = """\
host all team 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server on 127.0.0.1 for the whole session (stopped at its end)."""
    global _BIN
    _BIN = find_pg_bin()
    if _BIN is None:
        tool_missing("PostgreSQL (initdb, pg_ctl) is not installed")
    try:
        import psycopg
    except ImportError:
        tool_missing("psycopg is not installed (pip install 'certfleet[postgres]')")
    top = Path(tempfile.mkdtemp(prefix="certfleet-pg-"))
    prefix = _as_server_user()
    if prefix:
        os.chown(top, _uid("nobody"), -1)
    data = top / "data"
    _run([str(_BIN / "initdb"), "-D", str(data), "-U", "certfleet", "--auth=trust",
          "--no-locale", "-E", "UTF8", "--no-sync"])
    conf = data / "postgresql.conf"
    port = free_port()
    ca_file = _tls_files(data, top)
    extra = ("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
             f"port = {port}\nfsync = off\nmax_connections = 60\n"
             "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    # Written as the server's user (the files are nobody's when we are root).
    _write_as_owner(conf, conf.read_text() + extra)
    _write_as_owner(data / "pg_hba.conf", _HBA)
    server = PgServer("127.0.0.1", port, data, ca_file)
    try:
        server.start()
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE team LOGIN PASSWORD '{TEAM_PASSWORD}'")
        yield server
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


def _tls_files(data: Path, top: Path) -> Path:
    """The server's certificate and key (for ``localhost``, from a lab CA); its root's path."""
    from certfleet.lab.ca import LabCA

    ca = LabCA(name="certfleet PostgreSQL test")
    issued = ca.issue(("localhost",), key_type="ec-p256")
    owner = data.stat()
    for name, body in (("server.crt", issued.fullchain_pem), ("server.key", issued.key_pem())):
        path = data / name
        path.write_bytes(body)
        os.chmod(path, 0o600)
        with contextlib.suppress(OSError):
            os.chown(path, owner.st_uid, owner.st_gid)
    ca_file = top / "root.pem"
    ca_file.write_bytes(issued.root_pem)
    os.chmod(ca_file, 0o644)
    return ca_file


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _write_as_owner(path: Path, text: str) -> None:
    stat = path.stat()
    path.write_text(text)
    with contextlib.suppress(OSError):
        os.chown(path, stat.st_uid, stat.st_gid)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new empty database of the session's server (the superuser's)."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend of the state store in turn: "sqlite" (the default) or "postgresql".

    For PostgreSQL, ``CERTFLEET_STATE_URL`` names a new database of the
    session's server (every Store.open of the test, and its subprocesses, use it).
    """
    backend = str(request.param)
    monkeypatch.delenv("CERTFLEET_STATE_URL", raising=False)
    if backend == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create_database(f"t{os.getpid()}_{next(_counter)}")
        monkeypatch.setenv("CERTFLEET_STATE_URL", url)
        monkeypatch.setenv("CERTFLEET_STORE_KEY", STORE_KEY)
    return backend
