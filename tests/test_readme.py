"""The README stays true to the code."""

from __future__ import annotations

from pathlib import Path

from certfleet.pki.checks import FINDING_CODES
from certfleet.pki.profiles import FINDING_CODES as PROFILE_CODES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_finding_code_is_documented() -> None:
    """Each finding code and its severity appears in the README's tables."""
    text = README.read_text(encoding="utf-8")
    for codes in (FINDING_CODES, PROFILE_CODES):
        for code, (severity, _) in codes.items():
            assert f"| `{code}` | {severity} |" in text, code


def test_quick_start_commands_exist() -> None:
    """The two quick-start commands are the ones the dev script serves."""
    text = README.read_text(encoding="utf-8")
    assert "./dev demo" in text and "./dev test" in text
    script = (README.parent / "dev").read_text(encoding="utf-8")
    assert "demo)" in script and "test)" in script


def test_quick_start_puts_certfleet_on_path_before_its_first_use() -> None:
    """Before the first `certfleet ...` line, the README says how to put it on PATH,
    naming the environment ./dev creates, whose bin folder holds the console script."""
    import re
    import sys

    text = README.read_text(encoding="utf-8")
    # the first command line typed in a shell block
    first_use = re.search(r"^```sh\n(?:(?!```)[^\n]*\n)*?certfleet ", text, re.MULTILINE)
    assert first_use is not None
    before = text[: first_use.start()]
    assert ". .venv/bin/activate" in before and "pipx install ." in before
    script = (README.parent / "dev").read_text(encoding="utf-8")
    assert "venv=.venv\n" in script  # the default environment the README names
    # the environment running this test was made by ./dev: its bin folder has certfleet
    scripts = Path(sys.executable).parent
    assert (scripts / "certfleet").exists() or (scripts / "certfleet.exe").exists()
