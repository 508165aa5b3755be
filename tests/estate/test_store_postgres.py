"""The state store on PostgreSQL (a real server, tests/support/postgres.py) beside SQLite."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from certfleet.drivers.base import Backup
from certfleet.errors import ConfigError, StateError
from certfleet.estate.store import SCHEMA_VERSION, Store
from certfleet.inventory import StateConfig, parse_inventory
from certfleet.lab.ca import Issued, LabCA
from certfleet.lab.tls import free_port
from certfleet.pki.model import Bundle, spki_sha256
from loopdev import LoopEstate
from postgres import STORE_KEY, TEAM_PASSWORD, PgServer


def test_the_store_round_trips_on_each_backend(
    store_backend: str, tmp_path: Path, issued: Issued
) -> None:
    """Versions, keys, backups, runs, steps, history and audit read back the same."""
    bundle = Bundle(issued.leaf, issued.chain, issued.root, issued.key)
    with Store.open(tmp_path / "state") as store:
        assert store.schema_version == SCHEMA_VERSION
        key = store.add_key("wildcard", issued.key, origin="test")
        assert store.add_key("wildcard", issued.key, origin="again").id == key.id
        version = store.add_version("wildcard", bundle, key.id)
        assert store.current_version("wildcard") == version
        loaded = store.load_bundle(version)
        assert spki_sha256(loaded.private_key) == spki_sha256(issued.key)
        record = store.add_backup(Backup("sbc1", "sbc", files={"a.ini": b"[x]\n"}, meta={}),
                                  served_sha256="ab" * 32)
        assert store.read_backup(record).files == {"a.ini": b"[x]\n"}
        store.audit("deploy", "installed", device="sbc1", detail="v1")
        [line] = store.audit_log()
        assert line["device"] == "sbc1" and line["host"] == socket.gethostname()
        run_id = store.start_run("deploy", inventory_text="x")
        store.finish_run(run_id, 0)
        assert store.runs()[0]["id"] == run_id
    with Store.open(tmp_path / "state") as again:  # reopening migrates nothing
        assert again.schema_version == SCHEMA_VERSION
        assert again.current_version("wildcard") == version


def test_postgres_locks_each_device_and_names_the_holder(pg_url: str, tmp_path: Path) -> None:
    """Two stores on one database: different devices at once, the same device refused."""
    with Store.open(tmp_path / "a", url=pg_url) as first, \
            Store.open(tmp_path / "b", url=pg_url) as second:
        info = first.acquire_lock("deploy", devices=["sbc1", "sbc2"])
        second.acquire_lock("deploy", devices=["sbc3"])  # another device: fine
        held = rf"holds the lock of device .sbc2.: pid {info.pid} on .*deploy"
        with pytest.raises(StateError, match=held) as err:
            second.release_lock()
            second.acquire_lock("deploy", devices=["sbc2", "sbc3"])
        assert err.value.lock == info  # type: ignore[attr-defined]
        assert second.lock_holder() == info
        assert first.release_lock() == info
        assert second.lock_holder() is None
        assert second.acquire_lock("rollback sbc2", devices=["sbc2"]).pid == os.getpid()


def test_a_login_that_fails_is_one_line_without_the_password(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """A wrong password, an unreachable server: a StateError naming the URL, never the password."""
    pg_server.create_database("team_login")
    url = pg_server.url("team_login", user="team")
    with pytest.raises(StateError, match="cannot open the state store") as err:
        Store.open(tmp_path, url=url, password="not-the-" + TEAM_PASSWORD)
    assert TEAM_PASSWORD not in str(err.value) and "\n" not in err.value.message
    with Store.open(tmp_path, url=url, password=TEAM_PASSWORD) as store:
        assert store.schema_version == SCHEMA_VERSION
    unreachable = f"postgresql://team@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StateError, match="cannot open the state store"):
        Store.open(tmp_path, url=unreachable, password=TEAM_PASSWORD)


STATE_INVENTORY = """\
[state]
url = "{url}"
password = "env:CF_TEST_STATE_PASSWORD"
key = "env:CF_TEST_STORE_KEY"

[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com"]
"""


def test_the_inventory_state_table_takes_references_only(tmp_path: Path) -> None:
    """[state] url is a postgresql:// URL without a password; password and key are references."""
    inv = parse_inventory(STATE_INVENTORY.format(url="postgresql://team@db.example/certfleet"))
    assert inv.state == StateConfig("postgresql://team@db.example/certfleet",
                                    "env:CF_TEST_STATE_PASSWORD", "env:CF_TEST_STORE_KEY")
    assert parse_inventory(STATE_INVENTORY.split("[certificates")[1].join(["[certificates", ""])
                           ).state == StateConfig()
    for url in ("postgresql://team:hunter2@db.example/certfleet",
                "postgresql://team@db.example/certfleet?password=hunter2"):
        with pytest.raises(ConfigError, match=r"state\.url: holds a password") as err:
            parse_inventory(STATE_INVENTORY.format(url=url))
        assert "hunter2" not in str(err.value) and "hunter2" not in (err.value.hint or "")
    with pytest.raises(ConfigError, match="must be a postgresql:// URL"):
        parse_inventory(STATE_INVENTORY.format(url="mysql://db.example/x"))
    literal = STATE_INVENTORY.format(url="postgresql://db/x").replace(
        '"env:CF_TEST_STATE_PASSWORD"', '"hunter2"')
    with pytest.raises(ConfigError, match=r"state\.password: holds a literal secret"):
        parse_inventory(literal)


def test_the_cli_opens_the_store_named_by_the_inventory(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """history and unlock on the inventory's [state] store, logged in with its password."""
    pg_server.create_database("team_cli")
    url = pg_server.url("team_cli", user="team")
    inventory = tmp_path / "certfleet.toml"
    inventory.write_text(STATE_INVENTORY.format(url=url))
    monkeypatch.delenv("CERTFLEET_STATE_URL", raising=False)
    monkeypatch.setenv("CF_TEST_STORE_KEY", "unused")
    monkeypatch.setenv("CF_TEST_STATE_PASSWORD", "wrong")
    base = [sys.executable, "-m", "certfleet"]
    args = ["-i", str(inventory), "--state-dir", str(tmp_path / "state")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    failed = subprocess.run([*base, "history", *args], capture_output=True, text=True, env=env,
                            timeout=120)
    assert failed.returncode == 2, failed.stderr
    assert "cannot open the state store" in failed.stderr and "Traceback" not in failed.stderr
    assert "wrong" not in failed.stderr.replace("wrong password", "")
    env["CF_TEST_STATE_PASSWORD"] = TEAM_PASSWORD
    done = subprocess.run([*base, "unlock", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "other", url=url, password=TEAM_PASSWORD) as store:
        assert store.schema_version == SCHEMA_VERSION  # the CLI made the schema there
    # The store key's variable unset: what needs no key still works.
    keyless = {k: v for k, v in env.items() if k != "CF_TEST_STORE_KEY"}
    done = subprocess.run([*base, "history", *args], capture_output=True, text=True,
                          env=keyless, timeout=120)
    assert done.returncode == 0, done.stderr
    # --state-url wins over the inventory's [state] url
    elsewhere = f"postgresql://team@127.0.0.1:{free_port()}/nothing"
    refused = subprocess.run([*base, "history", *args, "--state-url", elsewhere],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "nothing" in refused.stderr


def test_a_store_wide_lock_and_device_locks_exclude_each_other(
    pg_url: str, tmp_path: Path
) -> None:
    """The deploy lock without devices waits for no device lock, and the other way round."""
    with Store.open(tmp_path / "a", url=pg_url) as first, \
            Store.open(tmp_path / "b", url=pg_url) as second:
        info = first.acquire_lock("deploy")
        with pytest.raises(StateError, match="holds the lock: pid") as err:
            second.acquire_lock("rollback sbc1", devices=["sbc1"])
        assert err.value.lock == info  # type: ignore[attr-defined]
        first.release_lock()
        mine = second.acquire_lock("rollback sbc1", devices=["sbc1"])
        with pytest.raises(StateError, match=f"pid {mine.pid} .*rollback sbc1"):
            first.acquire_lock("deploy")
        assert first.lock_holder() == mine


def test_secrets_are_encrypted_in_the_database_and_reach_another_machine(
    pg_url: str, tmp_path: Path, issued: Issued
) -> None:
    """Keys and backups are AES-GCM in the database; another state folder reads them back."""
    import psycopg

    bundle = Bundle(issued.leaf, issued.chain, issued.root, issued.key)
    with Store.open(tmp_path / "laptop1", url=pg_url, key=STORE_KEY) as store:
        key = store.add_key("wildcard", issued.key, origin="test")
        version = store.add_version("wildcard", bundle, key.id)
        record = store.add_backup(
            Backup("sbc1", "sbc", files={"key.pem": b"-----BEGIN PRIVATE KEY-----x"}, meta={}),
            served_sha256="ab" * 32)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT path, data, secret FROM blobs").fetchall()
    secret = {path for path, _, is_secret in rows if is_secret}
    assert any(p.startswith("keys/wildcard/") for p in secret)
    assert any(p.startswith("backups/sbc1/") for p in secret)
    assert any(p.endswith("leaf.pem") for p, _, s in rows if not s)  # certificates: in clear
    for path, data, is_secret in rows:
        if is_secret:
            assert b"PRIVATE KEY" not in bytes(data), path
    # Another machine: an empty state folder, the same database and store key.
    with Store.open(tmp_path / "laptop2", url=pg_url, key=STORE_KEY) as other:
        loaded = other.load_bundle(other.current_version("wildcard") or version)
        assert spki_sha256(loaded.private_key) == spki_sha256(issued.key)
        backup = other.read_backup(other.last_backup("sbc1") or record)
        assert backup.files == {"key.pem": b"-----BEGIN PRIVATE KEY-----x"}
    # Without the store key, or with another: refused, saying what is missing.
    with Store.open(tmp_path / "laptop3", url=pg_url) as keyless:
        mine = keyless.current_version("wildcard")  # what needs no key works
        assert mine is not None and mine.leaf_sha256 == version.leaf_sha256
        with pytest.raises(StateError, match="needs its store key") as err:
            keyless.load_bundle(mine)
        assert "[state] key" in (err.value.hint or "")
    with Store.open(tmp_path / "laptop4", url=pg_url, key="not the key") as wrong, \
            pytest.raises(StateError, match="not the key of this state store"):
        wrong.read_backup(wrong.last_backup("sbc1") or record)


def test_rekey_re_encrypts_every_secret_in_one_go(
    pg_url: str, tmp_path: Path, issued: Issued
) -> None:
    """After rekey the old key is refused and the new one reads every key and backup."""
    with Store.open(tmp_path / "a", url=pg_url, key=STORE_KEY) as store:
        store.add_key("wildcard", issued.key, origin="test")
        store.add_backup(Backup("sbc1", "sbc", files={"a": b"1"}, meta={}), served_sha256=None)
        assert store.rekey("the new key") == 3  # the key, the backup's file and its manifest
    with Store.open(tmp_path / "b", url=pg_url, key=STORE_KEY) as old, \
            pytest.raises(StateError, match="not the key of this state store"):
        old.read_backup(old.backups()[0])
    with Store.open(tmp_path / "c", url=pg_url, key="the new key") as new:
        assert new.read_backup(new.backups()[0]).files == {"a": b"1"}
        [record] = new.all_keys()
        assert spki_sha256(new.load_key(record)) == spki_sha256(issued.key)


def test_store_rekey_and_check_on_the_command_line(
    pg_url: str, tmp_path: Path, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store rekey takes a reference; store check finds a damaged secret and exits 1."""
    import psycopg
    from typer.testing import CliRunner

    from certfleet.cli.app import app

    monkeypatch.setenv("CERTFLEET_STATE_URL", pg_url)
    monkeypatch.setenv("CERTFLEET_STORE_KEY", STORE_KEY)
    with Store.open(tmp_path / "state") as store:
        store.add_key("wildcard", issued.key, origin="test")
    runner = CliRunner()
    base = ["--inventory", str(tmp_path / "none.toml"), "--state-dir", str(tmp_path / "other")]
    done = runner.invoke(app, ["store", "check", *base])
    assert done.exit_code == 0 and "postgresql store: ok" in done.stdout, done.output
    literal = runner.invoke(app, ["store", "rekey", "--new-key", "the-key-itself", *base])
    assert literal.exit_code == 2 and "secret reference" in literal.output
    monkeypatch.setenv("CF_TEST_NEW_KEY", "a brand new store key")
    done = runner.invoke(app, ["store", "rekey", "--new-key", "env:CF_TEST_NEW_KEY", "--json",
                               *base])
    assert done.exit_code == 0, done.output
    assert '"reencrypted": 1' in done.stdout
    refused = runner.invoke(app, ["store", "check", *base])  # the old key: refused, exit 2
    assert refused.exit_code == 2 and "not the key of this state store" in refused.output
    monkeypatch.setenv("CERTFLEET_STORE_KEY", "a brand new store key")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE blobs SET data = '\\x00'::bytea || data WHERE secret = 1")
    damaged = runner.invoke(app, ["store", "check", "--json", *base])
    assert damaged.exit_code == 1, damaged.output
    assert "keys/wildcard/" in damaged.stdout and "cannot be decrypted" in damaged.stdout


def test_tls_to_the_server_is_verified_when_the_url_asks(
    pg_server: PgServer, tmp_path: Path, lab_ca2: LabCA
) -> None:
    """sslmode=verify-full: the server's certificate and name are checked by libpq."""
    pg_server.create_database("tls_db")
    base = f"postgresql://certfleet@{{host}}:{pg_server.port}/tls_db?sslmode=verify-full"
    good = base.format(host="localhost") + f"&sslrootcert={pg_server.ca_file}"
    with Store.open(tmp_path / "a", url=good) as store:
        row = store.db.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None and row[0] is True
    other_ca = tmp_path / "other-root.pem"
    other_ca.write_bytes(lab_ca2.issue(("x.example",)).root_pem)
    for url in (base.format(host="localhost") + f"&sslrootcert={other_ca}",  # another CA
                base.format(host="127.0.0.1") + f"&sslrootcert={pg_server.ca_file}"):  # name
        with pytest.raises(StateError, match="cannot open the state store") as err:
            Store.open(tmp_path / "b", url=url)
        assert "\n" not in err.value.message


def test_the_database_going_away_mid_deploy_is_a_failure_not_a_traceback(
    pg_server: PgServer, pg_url: str, tmp_path: Path, loop_estate: LoopEstate
) -> None:
    """PostgreSQL stops once a device's install started: the device is put back, the run
    ends in a StateError (one line); with the server back the run is recorded interrupted."""
    import asyncio

    from certfleet.drivers.base import StepEvent
    from certfleet.estate.deploy import run_deploy
    from certfleet.pki.model import cert_sha256

    old_sha = cert_sha256(loop_estate.old.leaf)
    stopped: list[str] = []

    def on_event(event: StepEvent) -> None:
        if event.step == "install" and event.status == "start" and not stopped:
            stopped.append(event.device)
            pg_server.stop()

    try:
        with Store.open(tmp_path / "state", url=pg_url, key=STORE_KEY) as store:
            new_sha = loop_estate.import_renewed(store, tmp_path).leaf_sha256
            with pytest.raises(StateError, match="unreachable") as err:
                asyncio.run(run_deploy(loop_estate.inventory(), store, loop_estate.factory,
                                       concurrency=1, on_event=on_event))
            assert "\n" not in err.value.message
    finally:
        if stopped:
            pg_server.start()
    assert stopped
    # Every device serves what it served before, or the new version whole: no half state.
    for name in loop_estate.devices:
        assert loop_estate.served(name) in (old_sha, new_sha)
    assert loop_estate.served(stopped[0]) == old_sha  # the one in flight: put back
    with Store.open(tmp_path / "state", url=pg_url, key=STORE_KEY) as again:
        again.settle_interrupted()
        [row] = [r for r in again.history() if r["device"] == stopped[0]]
        assert row["outcome"] == "interrupted"


def test_csr_keeps_its_key_in_the_inventory_s_shared_store(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """certfleet csr NAME with [state]: the new key is in the database, encrypted."""
    import psycopg
    from typer.testing import CliRunner

    from certfleet.cli.app import app

    pg_server.create_database("team_csr")
    url = pg_server.url("team_csr", user="team")
    inventory = tmp_path / "certfleet.toml"
    inventory.write_text(STATE_INVENTORY.format(url=url))
    monkeypatch.delenv("CERTFLEET_STATE_URL", raising=False)
    monkeypatch.setenv("CF_TEST_STATE_PASSWORD", TEAM_PASSWORD)
    monkeypatch.setenv("CF_TEST_STORE_KEY", STORE_KEY)
    done = CliRunner().invoke(app, ["csr", "wildcard", "--inventory", str(inventory),
                                    "--state-dir", str(tmp_path / "state"), "--json"])
    assert done.exit_code == 0, done.output
    with psycopg.connect(pg_server.url("team_csr")) as conn:
        rows = conn.execute("SELECT data FROM blobs WHERE path LIKE 'keys/wildcard/%'"
                            " AND secret = 1").fetchall()
    assert len(rows) == 1 and b"PRIVATE KEY" not in bytes(rows[0][0])
