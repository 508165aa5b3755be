"""fsutil: atomic writes keep modes right and never touch the process umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from certfleet.fsutil import write_file_atomic, write_private_file

# Runs in a child process with its own umask, so the test's process keeps its own.
CONCURRENT = textwrap.dedent(
    """
    import json, os, sys, threading
    from pathlib import Path
    from certfleet.fsutil import write_file_atomic, write_private_file

    os.umask(0o027)
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen any race
    root = Path(sys.argv[1])
    stop = threading.Event()
    seen_umasks = set()

    def writer(n):
        for i in range(80):
            folder = root / f"w{n}" / f"d{i % 10}"
            write_file_atomic(folder / f"f{i}.txt", b"x")
            write_private_file(folder / f"k{i}.key", b"secret")

    def bystander(n):
        # Plain file and folder creation in other threads, as backups in parallel do.
        i = 0
        while not stop.is_set():
            folder = root / f"b{n}" / f"d{i}"
            folder.mkdir(parents=True)
            (folder / "plain.txt").write_bytes(b"y")
            i += 1

    def watcher():
        # What the kernel says the umask is, without changing it (Linux).
        status = Path("/proc/self/status")
        while not stop.is_set():
            for line in status.read_text().splitlines():
                if line.startswith("Umask:"):
                    seen_umasks.add(line.split()[1])

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    others = [threading.Thread(target=bystander, args=(n,)) for n in range(3)]
    if Path("/proc/self/status").exists():
        others.append(threading.Thread(target=watcher))
    for t in writers + others:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in others:
        t.join()
    modes = {}
    for path in [root, *root.rglob("*")]:
        if path == root:
            continue
        modes[str(path.relative_to(root))] = oct(path.stat().st_mode & 0o777)
    print(json.dumps({"modes": modes, "umasks": sorted(seen_umasks), "end": oct(os.umask(0o027))}))
    """
)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_concurrent_writes_never_create_world_writable_files_or_folders(tmp_path: Path) -> None:
    """Atomic writes from 4 threads while 3 others create folders and files: every mode honours
    the umask (0o027), none is 0o666/0o777, keys are 0600, and the umask never changes."""
    root = tmp_path / "tree"
    root.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT, str(root)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    modes: dict[str, str] = report["modes"]
    assert len([p for p in modes if p.endswith(".key")]) == 4 * 80
    wrong = {}
    for name, mode in modes.items():
        if name.endswith(".key"):
            expected = "0o600"
        elif name.endswith(".txt"):
            expected = "0o640"
        else:
            expected = "0o750"
        if mode != expected:
            wrong[name] = mode
    assert not wrong, f"modes that do not honour umask 0o027: {dict(list(wrong.items())[:10])}"
    assert report["end"] == "0o27"
    if Path("/proc/self/status").exists():
        assert report["umasks"] == ["0027"], report["umasks"]
    assert not [p for p in modes if Path(p).name.startswith(".")], "a temporary file was left"


def test_write_file_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A second write replaces the first in place; the folder holds the file only."""
    target = tmp_path / "a" / "b" / "file.txt"
    write_file_atomic(target, b"one")
    write_file_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_private_file_is_0600_even_over_a_public_one(tmp_path: Path) -> None:
    """A key written over a 0644 file ends 0600; a public file follows the umask."""
    target = tmp_path / "server.key"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_private_file(target, b"key")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    umask = os.umask(0o022)  # read back at once; this test runs no other thread
    os.umask(umask)
    public = write_file_atomic(tmp_path / "server.crt", b"cert")
    assert stat.S_IMODE(public.stat().st_mode) == 0o666 & ~umask
