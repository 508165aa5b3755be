"""The one error path of the commands: text printed as text, the JSON shape, the exit table."""

from __future__ import annotations

import json

import pytest
import typer

from certfleet.cli.common import exit_code_for, fail, handle_errors, print_error, text
from certfleet.errors import CertfleetError, ConfigError


def test_text_escapes_markup_and_shows_control_characters() -> None:
    assert text("[red]x[/] \x1b[2J\rend\tz") == "\\[red]x\\[/] \\x1b[2J\\x0dend\tz"


def test_print_error_prints_device_text_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    print_error("device said [bold]no[/] \x1b]0;title\x07", "run `certfleet status` [now]")
    err = capsys.readouterr().err
    assert "error: device said [bold]no[/] \\x1b]0;title\\x07" in err
    assert "Tip: run `certfleet status` [now]" in err
    assert "\x1b]0;" not in err


def test_print_error_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    print_error("bad", "fix it", json_out=True, json_fields={"ok": False, "files": []})
    assert json.loads(capsys.readouterr().out) == {
        "ok": False, "files": [], "error": "bad", "hint": "fix it"}


def test_fail_exits_with_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as raised:
        fail("nope", None, 1, json_out=True, json_fields={"findings": []})
    assert raised.value.exit_code == 1
    assert json.loads(capsys.readouterr().out) == {"findings": [], "error": "nope", "hint": None}


def test_handle_errors_maps_errors_to_the_exit_table(capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def command(error: CertfleetError, json_out: bool = False) -> None:
        raise error

    cases = [(ConfigError("bad option", hint="fix [it]"), 2), (CertfleetError("device broke"), 3)]
    for error, code in cases:
        assert exit_code_for(error) == code
        with pytest.raises(typer.Exit) as raised:
            command(error, json_out=True)
        assert raised.value.exit_code == code
        assert json.loads(capsys.readouterr().out)["error"] == error.message
    with pytest.raises(typer.Exit):
        command(ConfigError("bad [x]", hint="fix [it]"))
    assert "error: bad [x]" in capsys.readouterr().err
