"""The layout of the tests: one folder per product package, helpers in tests/support.

No test folder may be importable as a top-level package (``estate``,
``drivers``...): it would shadow, or be taken for, the product's own.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "src" / "certfleet"
NOT_MIRRORS = {"support", "data", "__pycache__"}


def _folders() -> list[Path]:
    return sorted(p for p in TESTS.iterdir() if p.is_dir() and p.name not in NOT_MIRRORS
                  and not p.name.startswith("."))


def test_tests_folder_is_not_on_the_import_path() -> None:
    assert str(TESTS) not in {os.path.abspath(entry) for entry in sys.path}
    assert str(TESTS / "support") in {os.path.abspath(entry) for entry in sys.path}


def test_no_test_folder_is_a_top_level_package() -> None:
    for folder in _folders():
        spec = importlib.util.find_spec(folder.name)
        places = [] if spec is None else [
            *(spec.submodule_search_locations or []), spec.origin or ""]
        assert not any(str(place).startswith(str(TESTS)) for place in places), folder.name


def test_each_test_folder_mirrors_a_product_package() -> None:
    folders = _folders()
    assert folders, "no test folders found"
    for folder in folders:
        assert (PACKAGE / folder.name / "__init__.py").is_file(), (
            f"tests/{folder.name} has no certfleet.{folder.name} to mirror")


def test_support_holds_no_tests() -> None:
    assert not list((TESTS / "support").glob("test_*.py"))
