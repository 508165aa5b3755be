"""The inventory is read and parsed once per command, for renew over several certificates too.

Every reader of the inventory (the acme, dns and notify tables, renew_before_days, the
devices, the secrets they need) takes what the one parse carries: a spy that counts the
calls of ``tomllib.loads`` on the inventory's text, and calls through, sees exactly one.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.lab import _seed_previous
from certfleet.estate.store import Store
from certfleet.lab.estate import LabEstate
from certfleet.lab.pebble import LabPebble, add_acme_to_inventory
from pebble_support import start_pebble

EXTRA = ("voice", "teams")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabEstate, LabPebble]]:
    pebble = start_pebble(tmp_path / "pebble")
    estate = LabEstate(tmp_path / "lab", sbcs=2)
    try:
        estate.start()
        with Store.open(tmp_path / "state") as store:
            _seed_previous(estate, store)
        with estate.environment():
            yield estate, pebble
    finally:
        estate.stop()
        pebble.stop()


class ParseSpy:
    """Counts the parses of one text by ``tomllib.loads`` (and parses it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.path = path
        self.calls = 0
        real = tomllib.loads

        def loads(text: str, **kwargs: object) -> dict[str, object]:
            if text.lstrip("\ufeff") == self.path.read_text(encoding="utf-8-sig"):
                self.calls += 1
            return real(text, **kwargs)  # type: ignore[arg-type]  # parse_float passes through

        monkeypatch.setattr(tomllib, "loads", loads)


def invoke(lab: LabEstate, tmp_path: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, [*args, "--json", "--inventory", str(lab.inventory_path),
                                      "--state-dir", str(tmp_path / "state")])
    return result.exit_code, json.loads(result.stdout)


def test_renew_of_three_certificates_parses_the_inventory_once(
    lab: tuple[LabEstate, LabPebble], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    estate, pebble = lab
    path = estate.inventory_path
    text = path.read_text(encoding="utf-8")
    for name in EXTRA:  # two more certificates, no device uses them yet
        text += f'\n[certificates.{name}]\ncn = "{name}.lab.example"\n'
    path.write_text(text, encoding="utf-8")
    for name in ("wildcard", *EXTRA):
        add_acme_to_inventory(path, pebble, certificate=name, renew_before_days=1)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('\n[notify]\nurls = ["env:LAB_NOTIFY_URL"]\n')
    monkeypatch.setenv("LAB_NOTIFY_URL", f"file://{tmp_path / 'notify.jsonl'}")

    spy = ParseSpy(monkeypatch, path)
    code, data = invoke(estate, tmp_path, "renew")
    assert code == 0, data
    names = [item["certificate"] for item in data["certificates"]]  # type: ignore[attr-defined]
    assert sorted(names) == sorted(("wildcard", *EXTRA))
    actions = {item["certificate"]: item["action"] for item in data["certificates"]}  # type: ignore[attr-defined]
    assert actions == {"wildcard": "none", "voice": "issued", "teams": "issued"}
    assert spy.calls == 1, f"renew of {len(names)} certificates parsed the inventory {spy.calls}x"

    for command in (["status"], ["plan"], ["deploy", "--dry-run"]):
        spy.calls = 0
        invoke(estate, tmp_path, *command)
        assert spy.calls == 1, f"{command[0]} parsed the inventory {spy.calls} times"
