"""`pip install .` without a deprecation warning about the licence (newcomer finding)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """A `project.license` TOML table, or a `License ::` classifier next to an SPDX licence,
    makes setuptools >= 77 warn on every install; the build asks for a setuptools that reads
    the SPDX string."""
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    project = data["project"]
    assert isinstance(project["license"], str) and project["license"]
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]
    requires = data["build-system"]["requires"]
    setuptools = next(r for r in requires if r.startswith("setuptools"))
    match = re.search(r">=\s*(\d+)", setuptools)
    assert match is not None and int(match.group(1)) >= 77, setuptools
