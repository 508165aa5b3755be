"""Options several commands share, declared once (``option_group``): the flags work and read
as if written out in each command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from typer.testing import CliRunner

from certfleet.cli.common import handle_errors, option_group
from certfleet.lab.ca import Issued
from certfleet.lab.estate import WILDCARD, LabEstate
from lab_support import invoke

PFX_PASSWORD = "Pfx-pass 1"


@dataclass(frozen=True)
class Pair:
    left: int = typer.Option(1, "--left", help="The left one.")
    right: str = typer.Option("r", "--right", help="The right one.")


def _pair_app(seen: list[tuple[str, Pair, bool]]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @handle_errors
    @option_group("pair", Pair)
    def run(
        first: str = typer.Option("f", "--first", help="Comes first."),
        pair: Pair = Pair(),  # a placeholder: option_group passes the options given
        last: bool = typer.Option(False, "--last", help="Comes last."),
    ) -> None:
        seen.append((first, pair, last))

    return app


def test_the_group_stands_in_its_place_and_arrives_whole() -> None:
    seen: list[tuple[str, Pair, bool]] = []
    app = _pair_app(seen)
    result = CliRunner().invoke(app, ["--left", "5", "--last"])
    assert result.exit_code == 0, result.output
    assert seen == [("f", Pair(left=5, right="r"), True)]
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    places = [shown.index(flag) for flag in ("--first", "--left", "--right", "--last")]
    assert places == sorted(places), shown
    assert "The left one." in shown and "The right one." in shown


def _pfx(issued: Issued, path: Path) -> Path:
    assert issued.key is not None
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"wildcard", issued.key, issued.leaf, [*issued.chain, issued.root],
        BestAvailableEncryption(PFX_PASSWORD.encode())))
    return path


def test_import_and_adopt_take_the_file_password_from_a_file_or_a_variable(
    sbc_lab: LabEstate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """adopt --password-file, import --password-env: both open a protected .pfx."""
    state = tmp_path / "state"
    secret = tmp_path / "pfx-password.txt"
    secret.write_text(PFX_PASSWORD + "\n", encoding="utf-8")
    last_year = _pfx(sbc_lab.old, tmp_path / "last-year.pfx")
    adopted = invoke(sbc_lab, state, "adopt", "wildcard", str(last_year),
                     "--password-file", str(secret), "--json")
    assert adopted.exit_code == 0, adopted.output
    assert json.loads(adopted.stdout)["served_by"] == ["sbc1", "sbc2-ha"]

    renewed = _pfx(sbc_lab.ca.issue(WILDCARD, key_type="ec-p256"), tmp_path / "renewed.pfx")
    no_password = invoke(sbc_lab, state, "import", "wildcard", str(renewed), "--json")
    assert no_password.exit_code == 2, no_password.output
    monkeypatch.setenv("PFX_PW", PFX_PASSWORD)
    imported = invoke(sbc_lab, state, "import", "wildcard", str(renewed),
                      "--password-env", "PFX_PW", "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["version"]["number"] == 2
