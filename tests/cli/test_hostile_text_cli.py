"""Text a device sent, kept in the state store, is data: the history table and the console
show its control characters as \\x1b, whatever path they take to the terminal."""

from __future__ import annotations

import io
from pathlib import Path

from typer.testing import CliRunner

from certfleet.cli.app import app
from certfleet.cli.common import SafeConsole
from certfleet.drivers.base import DeployOutcome, StepEvent
from certfleet.estate.store import Store

EVIL = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mevil"


def test_history_shows_a_devices_escape_sequences_visibly(tmp_path: Path) -> None:
    """A device's message and step detail holding ESC/BEL reach `history` as \\x1b, \\x07."""
    with Store.open(tmp_path) as store:
        run = store.start_run("deploy")
        steps = [StepEvent("sbc1", "install", "start"),
                 StepEvent("sbc1", "install", "failed", f"device said {EVIL}")]
        store.record_deployment(
            run_id=run, device="sbc1", kind="sbc", certificate="wildcard", version_id=None,
            started="2026-12-01T02:17:21+00:00",
            outcome=DeployOutcome("sbc1", "failed", f"sbc1: the device answered {EVIL}",
                                  steps=steps))
        store.finish_run(run, 3)
    for columns in ("80", "200"):
        result = CliRunner(env={"COLUMNS": columns}).invoke(
            app, ["history", "--steps", "--state-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "\x1b" not in out and "\x07" not in out, repr(out)
        assert out.count("\\x1b") >= 2 and "PWNED" in out, out


def test_the_console_shows_control_characters_of_any_text_it_prints() -> None:
    """Printed with markup=False or inside markup, a device's ESC never reaches the
    terminal; rich's own colour codes still do."""
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system="standard", width=200)
    console.print(f"sbc1: install failed ({EVIL})", markup=False, highlight=False)
    console.print(f"[red]refused[/] {EVIL}", highlight=False)
    text = out.getvalue()
    assert "\x1b]" not in text and "\x1b[2J" not in text, repr(text)
    assert text.count("\\x1b]0;PWNED") == 2 and "\x1b[31m" in text  # the red of [red]
