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
from certfleet.lab.ca import Issued, LabCA
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


def test_lock_refuses_second_holder_naming_it(tmp_path: Path) -> None:
    """The deploy lock names its live holder; a second take is refused, even with break_lock."""
    with Store.open(tmp_path) as first, Store.open(tmp_path) as second:
        info = first.acquire_lock("deploy")
        with pytest.raises(StateError, match=rf"pid {info.pid} on .*deploy") as err:
            second.acquire_lock("rollback sbc1")
        assert err.value.lock == info  # type: ignore[attr-defined]
        with pytest.raises(StateError, match="holds the lock"):
            second.acquire_lock("deploy", break_lock=True)
        assert second.lock_holder() == info
        assert first.release_lock() == info
        assert second.acquire_lock("deploy").pid == os.getpid()
        assert first.lock_holder() is not None and second.lock_holder() is None


def test_audit_records_os_user(tmp_path: Path) -> None:
    """Audit lines carry the time, the OS user, the command and the outcome."""
    with Store.open(tmp_path) as store:
        store.audit("deploy", "installed", device="sbc1", detail="v1")
        [line] = store.audit_log()
        assert line["command"] == "deploy" and line["device"] == "sbc1"
        assert line["user"] and line["at"]


def test_older_store_is_migrated_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at an older schema is upgraded by the missing migrations, data kept."""
    from certfleet.estate.store import schema

    with Store.open(tmp_path) as store:
        store.audit("init", "ok")
    extra = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)"
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, extra])
    with Store.open(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION + 1
        store.db.execute("INSERT INTO notes (text) VALUES ('kept')")
        assert [row["command"] for row in store.audit_log()] == ["init"]


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    """A process killed while holding the lock never blocks the next one: the OS released it."""
    import signal
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from certfleet.estate.store import Store\n"
        "s = Store.open(sys.argv[1]); s.acquire_lock('deploy'); print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with Store.open(tmp_path) as store:
            held = store.lock_holder()
            assert held is not None and held.pid == child.pid
            with pytest.raises(StateError, match=f"pid {child.pid}"):
                store.acquire_lock("deploy")
            child.send_signal(signal.SIGKILL)
            child.wait()
            assert store.lock_holder() is None
            assert store.acquire_lock("deploy").pid == os.getpid()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_versions_are_numbered_per_certificate(tmp_path: Path, lab_ca: LabCA) -> None:
    """wildcard v1, old v1, wildcard v2: each certificate counts its own versions."""
    with Store.open(tmp_path) as store:
        made = []
        for name in ("wildcard", "old", "wildcard"):
            issued = lab_ca.issue((f"{name}.example.com",), key_type="ec-p256")
            key = store.add_key(name, issued.key, origin="test")
            made.append(store.add_version(name, Bundle(issued.leaf, issued.chain, issued.root,
                                                       issued.key), key.id))
        assert [v.label for v in made] == ["wildcard v1", "old v1", "wildcard v2"]
        assert store.current_version("wildcard") == made[2]
        assert [v.number for v in store.versions("wildcard")] == [1, 2]
        assert store.keys_for("old")[0].certificate == "old"


def test_encrypted_backup_needs_the_passphrase(tmp_path: Path) -> None:
    """With a key passphrase the backup files are encrypted (0600) and read back only with it."""
    secret_key = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    backup = Backup("sbc1", "sbc", files={"tls0-private_key.pem": secret_key},
                    has_private_key=True)
    with Store.open(tmp_path) as store:
        record = store.add_backup(backup, served_sha256=None, passphrase="s3cret")
        assert record.encrypted
        stored = (record.dir / "tls0-private_key.pem").read_bytes()
        assert b"PRIVATE KEY" not in stored
        if os.name == "posix":
            assert stat.S_IMODE((record.dir / "backup.json").stat().st_mode) == 0o600
        with pytest.raises(PasswordError, match="encrypted"):
            store.read_backup(record)
        with pytest.raises(PasswordError, match="cannot be decrypted"):
            store.read_backup(record, "wrong")
        assert store.read_backup(record, "s3cret").files == backup.files


def test_history_is_a_constant_number_of_queries(tmp_path: Path) -> None:
    """history reads N deployments with their runs and steps in the same few queries."""
    from certfleet.drivers.base import DeployOutcome, StepEvent

    def count(rows: int) -> int:
        folder = tmp_path / f"s{rows}"
        with Store.open(folder) as store:
            run = store.start_run("deploy")
            for index in range(rows):
                steps = [StepEvent(f"d{index}", "install", "start"),
                         StepEvent(f"d{index}", "install", "ok")]
                store.record_deployment(
                    run_id=run, device=f"d{index}", kind="sbc", certificate="wildcard",
                    version_id=None, started="t",
                    outcome=DeployOutcome(f"d{index}", "installed", "ok", steps=steps))
            store.finish_run(run, 0)
            statements: list[str] = []
            store.db.set_trace_callback(statements.append)
            history = store.history(limit=100)
            store.db.set_trace_callback(None)
            assert len(history) == rows
            assert history[0]["user"] and history[0]["command"] == "deploy"
            assert history[0]["last_step"] == "install (ok)"
            return len(statements)

    assert count(2) == count(40) <= 3


def test_history_table_fits_100_columns_with_whole_times(tmp_path: Path) -> None:
    """history: time not cut, user, outcome; --steps puts each step on a row of its own."""
    import io

    from rich.console import Console

    from certfleet.cli.estate_tables import render_history
    from certfleet.drivers.base import DeployOutcome, StepEvent

    with Store.open(tmp_path) as store:
        run = store.start_run("deploy")
        steps = [StepEvent("sbc1", "install", "start"), StepEvent("sbc1", "install", "ok")]
        store.record_deployment(
            run_id=run, device="sbc1", kind="sbc", certificate="wildcard", version_id=None,
            started="2026-12-01T02:17:21+00:00",
            outcome=DeployOutcome("sbc1", "installed", "sbc1: installed and verified",
                                  steps=steps))
        store.finish_run(run, 0)
        rows = store.history()
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(render_history(rows, steps=True))
    text = out.getvalue()
    assert all(len(line) <= 100 for line in text.splitlines())
    finished = rows[0]["finished"].replace("T", " ").removesuffix("+00:00")
    assert finished in text and rows[0]["user"] in text and "installed" in text
    step_rows = [line.split() for line in text.splitlines() if "install" in line.split()]
    assert [row[row.index("install") - 2] for row in step_rows] == ["start", "ok"]


def test_a_run_ended_by_an_exception_marks_its_open_deployments(tmp_path: Path) -> None:
    """finish_run (Ctrl-C, SIGTERM path) records what was still in progress as interrupted."""
    from certfleet.drivers.base import StepEvent

    with Store.open(tmp_path) as store:
        run = store.start_run("deploy")
        deployment = store.begin_deployment(
            run_id=run, device="sbc1", kind="sbc", certificate="wildcard", version_id=None,
            target_sha256=None, started="t")
        store.record_step(deployment, StepEvent("sbc1", "install", "start"))
        assert store.history()[0]["outcome"] == "in-progress"
        assert store.settle_interrupted() == []  # our own run is alive
        store.finish_run(run, 130)
        [row] = store.history()
        assert row["outcome"] == "interrupted" and row["exit_code"] == 3
        assert row["message"].startswith("interrupted at install (start)")


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_run_of_a_live_process_stays_in_progress_until_it_dies(tmp_path: Path) -> None:
    """Readers mark a run interrupted only once its process is gone, whatever its pid says."""
    import signal
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from certfleet.estate.store import Store\n"
        "from certfleet.drivers.base import StepEvent\n"
        "s = Store.open(sys.argv[1]); run = s.start_run('deploy')\n"
        "d = s.begin_deployment(run_id=run, device='sbc1', kind='sbc', certificate='wildcard',"
        " version_id=None, target_sha256=None, started='t')\n"
        "s.record_step(d, StepEvent('sbc1', 'backup', 'ok'))\n"
        "print('running', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "running"
        with Store.open(tmp_path) as store:
            assert store.settle_interrupted() == []
            assert store.history()[0]["outcome"] == "in-progress"
            child.send_signal(signal.SIGKILL)
            child.wait()
            [run_id] = store.settle_interrupted()
            [row] = store.history()
            assert row["run_id"] == run_id and row["outcome"] == "interrupted"
            assert row["last_step"] == "backup (ok)"
            assert store.settle_interrupted() == []  # once
            assert store.audit_log()[0]["outcome"] == "interrupted"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
