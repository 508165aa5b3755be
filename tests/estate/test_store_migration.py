"""A state folder written at schema 1 (before the certificates table) opens migrated, data kept."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from certfleet.estate.store import SCHEMA_VERSION, Store

OLD = Path(__file__).parent / "data" / "state-v1"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the schema-1 folder (keys, versions, runs, a backup, a lock row)."""
    folder = tmp_path / "state"
    shutil.copytree(OLD, folder)
    db = sqlite3.connect(folder / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()
    return folder


def test_schema_1_store_is_migrated(old_store: Path) -> None:
    """Certificates become rows referenced by id; versions get numbers per certificate."""
    with Store.open(old_store) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.certificate_names() == ["wildcard", "old"]
        labels = [(v.id, v.label) for v in store.versions()]
        assert labels == [(1, "wildcard v1"), (2, "old v1"), (3, "wildcard v2")]
        current = store.current_version("wildcard")
        assert current is not None and current.id == 3
        bundle = store.load_bundle(current)
        assert bundle.leaf_sha256 == current.leaf_sha256 and bundle.private_key is not None
        old = store.current_version("old")
        assert old is not None
        assert store.load_bundle(old, "s3cret").private_key is not None
        assert [k.certificate for k in store.keys_for("wildcard")] == ["wildcard", "wildcard"]
        assert [i["certificate"] for i in store.imports()] == ["wildcard", "old", "wildcard"]
        rows = store.history()
        assert [(r["device"], r["outcome"], r["certificate"]) for r in rows] == [
            ("sbc2", "not-attempted", "wildcard"), ("sbc1", "installed", "wildcard")]
        assert rows[1]["version_number"] == 2 and rows[1]["last_step"] == "install (ok)"
        assert rows[1]["served_after"] == {"127.0.0.1:1": "bb" * 32}
        backup = store.last_backup("sbc1")
        assert backup is not None and not backup.encrypted
        assert store.read_backup(backup).files == {"config.ini": b"[x]\n"}
        # the lock row of schema 1 is gone: the lock is the OS's now
        assert store.lock_holder() is None
        store.acquire_lock("deploy")
        indexes = {row[0] for row in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"steps_deployment", "keys_spki", "versions_leaf"} <= indexes
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        # new versions continue each certificate's count
        from certfleet.lab.ca import LabCA
        from certfleet.pki.model import Bundle

        issued = LabCA().issue(("old.example.com",), key_type="ec-p256")
        key = store.add_key("old", issued.key, origin="test", passphrase="s3cret")
        added = store.add_version("old", Bundle(issued.leaf, issued.chain, issued.root,
                                                issued.key), key.id)
        assert added.label == "old v2"
        assert store.load_bundle(added, "s3cret").leaf_sha256 == added.leaf_sha256
    with Store.open(old_store) as store:  # reopening migrates nothing twice
        assert store.schema_version == SCHEMA_VERSION


def _tables(folder: Path) -> dict[str, list[tuple[object, ...]]]:
    """Each table's columns, foreign keys and indexes, as SQLite reports them."""
    with Store.open(folder) as store:
        db = store.db
        names = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: [
            *(tuple(row) for row in db.execute(f"PRAGMA table_info({name})")),
            *(tuple(row)[2:] for row in db.execute(f"PRAGMA foreign_key_list({name})")),
            *((row[1], row[2], [c[2] for c in db.execute(f"PRAGMA index_info({row[1]})")])
              for row in db.execute(f"PRAGMA index_list({name})")),
        ] for name in names}


def test_migrated_store_has_the_tables_of_a_new_one(old_store: Path, tmp_path: Path) -> None:
    """Schema 1 migrated ends with the same columns, keys and indexes as a store made today."""
    new = _tables(tmp_path / "new")
    assert new == _tables(old_store)
    assert [c[1] for c in new["versions"][:3]] == ["id", "certificate_id", "number"]
    assert ("deployments_outcome", 0, ["outcome"]) in new["deployments"]
