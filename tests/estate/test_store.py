"""The state store: schema, keys 0600, versions, backups, audit and the lock."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from certfleet.drivers.base import Backup
from certfleet.errors import PasswordError, StateError
from certfleet.estate.store import SCHEMA_VERSION, Store
from certfleet.lab.ca import Issued
from certfleet.pki.model import Bundle, spki_sha256


def test_new_store_has_current_schema(tmp_path: Path) -> None:
    """Opening an empty folder creates the database at the current schema version."""
    with Store.open(tmp_path / "state") as store:
        assert store.schema_version == SCHEMA_VERSION
    with Store.open(tmp_path / "state") as store:  # reopening is idempotent
        assert store.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer release is refused, not damaged."""
    (tmp_path / "state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    with pytest.raises(StateError, match="newer than this certfleet"):
        Store.open(tmp_path / "state")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_key_file_is_private_and_encrypted(tmp_path: Path, issued: Issued) -> None:
    """A stored key is 0600 and, with a passphrase, encrypted and needs it back."""
    with Store.open(tmp_path) as store:
        record = store.add_key("wildcard", issued.key, origin="test", passphrase="s3cret")
        assert stat.S_IMODE(record.path.stat().st_mode) == 0o600
        assert b"ENCRYPTED" in record.path.read_bytes()
        with pytest.raises(PasswordError, match="encrypted"):
            store.load_key(record)
        key = store.load_key(record, "s3cret")
        assert spki_sha256(key) == spki_sha256(issued.leaf)
        # the same key is not stored twice
        assert store.add_key("wildcard", issued.key, origin="again").id == record.id


def test_version_round_trip(tmp_path: Path, issued: Issued) -> None:
    """A stored version loads back as the same bundle with its key."""
    bundle = Bundle(issued.leaf, issued.chain, issued.root, issued.key)
    with Store.open(tmp_path) as store:
        key = store.add_key("wildcard", issued.key, origin="test")
        version = store.add_version("wildcard", bundle, key.id)
        assert store.current_version("wildcard") == version
        loaded = store.load_bundle(version)
        assert loaded.leaf_sha256 == bundle.leaf_sha256
        assert loaded.chain == bundle.chain and loaded.root == bundle.root
        assert spki_sha256(loaded.private_key) == spki_sha256(issued.key)
        assert version.names == ("*.example.com", "example.com")


def test_backup_is_written_under_the_state_dir(tmp_path: Path) -> None:
    """A driver backup becomes files under the state folder, read back intact."""
    backup = Backup("sbc1", "sbc", files={"config.ini": b"[x]\n"}, meta={"ctx": [0]})
    with Store.open(tmp_path) as store:
        record = store.add_backup(backup, served_sha256="ab" * 32)
        assert record.dir.is_relative_to(tmp_path)
        assert store.last_backup("sbc1") == record
        again = store.read_backup(record)
        assert again.files == {"config.ini": b"[x]\n"} and again.meta == {"ctx": [0]}


def test_lock_refuses_second_holder_and_can_be_broken(tmp_path: Path) -> None:
    """The deploy lock names its holder; a second take is refused unless broken."""
    with Store.open(tmp_path) as first, Store.open(tmp_path) as second:
        info = first.acquire_lock("deploy")
        with pytest.raises(StateError, match=rf"pid {info.pid} on .*") as err:
            second.acquire_lock("deploy")
        assert "certfleet unlock" in (err.value.hint or "")
        second.acquire_lock("deploy", break_lock=True)
        assert second.release_lock() is not None
        assert first.lock_holder() is None


def test_audit_records_os_user(tmp_path: Path) -> None:
    """Audit lines carry the time, the OS user, the command and the outcome."""
    with Store.open(tmp_path) as store:
        store.audit("deploy", "installed", device="sbc1", detail="v1")
        [line] = store.audit_log()
        assert line["command"] == "deploy" and line["device"] == "sbc1"
        assert line["user"] and line["at"]


def test_older_store_is_migrated_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at an older schema is upgraded by the missing migrations, data kept."""
    from certfleet.estate import store as store_module

    with Store.open(tmp_path) as store:
        store.audit("init", "ok")
    extra = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, extra])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(store_module.MIGRATIONS))
    with Store.open(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION + 1
        store.db.execute("INSERT INTO notes (text) VALUES ('kept')")
        assert [row["command"] for row in store.audit_log()] == ["init"]


@pytest.mark.skipif(os.name != "posix", reason="process lookup by pid")
def test_stale_lock_is_named_stale(tmp_path: Path) -> None:
    """A lock whose process is gone says so, pointing at unlock."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    with Store.open(tmp_path) as store:
        store.acquire_lock("deploy")
        store.db.execute("UPDATE locks SET pid = ?", (int(child.stdout),))
        with pytest.raises(StateError, match="the lock is stale"):
            store.acquire_lock("deploy")
