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
