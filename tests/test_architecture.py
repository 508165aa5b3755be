"""The import direction of the package holds, read statically from the source.

Data flows one way: ``pki`` (pure: bytes in, objects out) is used by
``drivers``, ``estate`` and ``inventory``, which are used by ``cli``. The lab
is used by the demo and the tests, never by the core. These tests parse every
module with :mod:`ast`, so they see imports inside functions and do not
depend on what happens to be imported already.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "certfleet"

# What the pure core must never import: the other layers, and anything that
# talks to a network, a terminal, a database or another process.
PKI_FORBIDDEN = (
    "certfleet.drivers",
    "certfleet.cli",
    "certfleet.lab",
    "certfleet.estate",
    "socket",
    "ssl",
    "asyncio",
    "asyncssh",
    "httpx",
    "sqlite3",
    "rich",
    "typer",
    "http",
    "urllib.request",
    "subprocess",
)
CORE_PACKAGES = ("pki", "drivers", "estate", "inventory", "acme", "dns", "notify")
CORE_FORBIDDEN = ("certfleet.cli", "certfleet.lab", "certfleet.web")
# The dashboard sits above the estate and below the CLI: it never imports either of these.
WEB_FORBIDDEN = ("certfleet.cli", "certfleet.lab")

# Tools the product must not shell out to: cryptography and pyjks do this work.
EXTERNAL_TOOLS = ("openssl", "keytool")
PROCESS_CALLS = frozenset(
    {
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.Popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "os.system",
        "os.popen",
        "os.execv",
        "os.execve",
        "os.execvp",
        "os.execvpe",
        "os.execl",
        "os.execlp",
        "os.spawnv",
        "os.spawnvp",
        "os.spawnl",
        "os.spawnlp",
        "os.posix_spawn",
        "os.posix_spawnp",
        "asyncio.create_subprocess_exec",
        "asyncio.create_subprocess_shell",
        "shutil.which",
    }
)


@dataclass(frozen=True)
class Import:
    """One imported module name and where the import statement is."""

    module: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(PACKAGE_ROOT.parent)}:{self.line} imports {self.module}"


def module_name(path: Path) -> str:
    """Dotted name of the module stored at ``path`` under ``src/``."""
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    # In a package's __init__ one dot means the package itself.
    drop = level - 1 if is_package else level
    if drop:
        base = base[:-drop]
    return ".".join([*base, name] if name else base)


_DYNAMIC_IMPORTS = ("importlib.import_module", "import_module", "__import__")


def imports_of(source: str, module: str, path: Path, *, is_package: bool = False) -> list[Import]:
    """Every module that ``source`` imports, anywhere in the file, as absolute names.

    ``from X import Y`` counts as both ``X`` and ``X.Y`` (Y may be a module);
    ``importlib.import_module("X")`` and ``__import__("X")`` with a constant
    string count as importing ``X``.
    """
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = _resolve_relative(module, is_package, node.level, node.module)
            else:
                target = node.module or ""
            found.append(Import(target, path, node.lineno))
            found.extend(
                Import(f"{target}.{alias.name}", path, node.lineno) for alias in node.names
            )
        elif isinstance(node, ast.Call) and _dotted(node.func) in _DYNAMIC_IMPORTS:
            first = node.args[0] if node.args else None
            value = first.value if isinstance(first, ast.Constant) else None
            # A relative name needs the package= argument: not used in this code base.
            if isinstance(value, str) and not value.startswith("."):
                found.append(Import(value, path, node.lineno))
    return found


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _matches(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def source_files(part: str) -> list[Path]:
    """The files of ``certfleet.<part>``: every module of a package, or the one module."""
    package = PACKAGE_ROOT / part
    if package.is_dir():
        return sorted(package.rglob("*.py"))
    module = PACKAGE_ROOT / f"{part}.py"
    return [module] if module.is_file() else []


def imports_in(part: str) -> Iterator[Import]:
    for path in source_files(part):
        yield from imports_of(
            path.read_text(encoding="utf-8"),
            module_name(path),
            path,
            is_package=path.name == "__init__.py",
        )


def violations(part: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        {str(imp) for imp in imports_in(part) if any(_matches(imp.module, f) for f in forbidden)}
    )


def test_pki_exists_and_is_scanned() -> None:
    """The scan sees the pki package, so the checks below cannot pass vacuously."""
    files = source_files("pki")
    assert files, f"no modules found under {PACKAGE_ROOT / 'pki'}"
    assert any(imp.module.startswith("cryptography") for imp in imports_in("pki"))


def test_pki_imports_no_other_layer_and_no_io_library() -> None:
    """certfleet.pki imports nothing from drivers, cli, lab, estate, nor network/terminal/db."""
    found = violations("pki", PKI_FORBIDDEN)
    assert not found, "the pure core imports what it must not:\n" + "\n".join(found)


@pytest.mark.parametrize("part", CORE_PACKAGES)
def test_core_never_imports_cli_or_lab(part: str) -> None:
    """Core packages (pki, drivers, estate, inventory) never import the CLI, web or the lab."""
    files = source_files(part)
    assert files, f"certfleet.{part} not found under {PACKAGE_ROOT}: the check would be vacuous"
    assert list(imports_in(part)), f"no import seen in certfleet.{part}: the scan is broken"
    found = violations(part, CORE_FORBIDDEN)
    assert not found, f"certfleet.{part} depends on an outer layer:\n" + "\n".join(found)


def test_web_never_imports_cli_or_lab() -> None:
    """certfleet.web (the dashboard) is below the CLI: it never imports certfleet.cli or the lab."""
    assert source_files("web"), "certfleet.web not found: the check would be vacuous"
    found = violations("web", WEB_FORBIDDEN)
    assert not found, "certfleet.web depends on an outer layer:\n" + "\n".join(found)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments, so ``run([OPENSSL, ...])`` is seen too."""
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        constants[target.id] = node.value.value
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.target.id] = node.value.value
    return constants


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local names bound to process-spawning functions or their modules."""
    aliases = {"subprocess": "subprocess", "os": "os", "asyncio": "asyncio", "shutil": "shutil"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def tool_calls(source: str, path: Path) -> list[str]:
    """Calls that start (or look up) openssl or keytool, as ``file:line call``."""
    tree = ast.parse(source, filename=str(path))
    constants = _string_constants(tree)
    aliases = _aliases(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        if full not in PROCESS_CALLS:
            continue
        texts: list[str] = []
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            for sub in ast.walk(arg):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    texts.append(sub.value)
                elif isinstance(sub, ast.Name) and sub.id in constants:
                    texts.append(constants[sub.id])
        if any(tool in text.lower() for text in texts for tool in EXTERNAL_TOOLS):
            found.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{node.lineno} {full}(...)")
    return found


def product_files() -> list[Path]:
    """Every module of the package except the lab."""
    return [
        path
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        if "lab" not in path.relative_to(PACKAGE_ROOT).parts
    ]


def test_product_never_shells_out_to_openssl_or_keytool() -> None:
    """No product module outside the lab runs openssl or keytool (cryptography/pyjks do it)."""
    files = product_files()
    assert files
    found = [hit for path in files for hit in tool_calls(path.read_text(encoding="utf-8"), path)]
    assert not found, "product code shells out to an external tool:\n" + "\n".join(found)


# --- the checkers themselves: a rule that cannot fail guards nothing ---------

_FAKE = PACKAGE_ROOT / "pki" / "fake.py"


def test_checker_sees_relative_function_level_and_dynamic_imports() -> None:
    """The import scan resolves relative imports and sees imports inside functions."""
    source = (
        "from ..drivers import base\n"
        "from . import model\n"
        "def f():\n"
        "    import socket\n"
        "    import importlib\n"
        "    importlib.import_module('certfleet.cli.app')\n"
    )
    modules = {imp.module for imp in imports_of(source, "certfleet.pki.fake", _FAKE)}
    assert {"certfleet.drivers", "certfleet.drivers.base", "certfleet.pki.model"} <= modules
    assert {"socket", "certfleet.cli.app"} <= modules
    init = imports_of(
        "from . import load\n",
        "certfleet.pki",
        PACKAGE_ROOT / "pki" / "__init__.py",
        is_package=True,
    )
    assert {imp.module for imp in init} == {"certfleet.pki", "certfleet.pki.load"}


def test_checker_matches_whole_module_names_only() -> None:
    """``http`` forbids http.client but not httpx; urllib.request does not forbid urllib.parse."""
    assert _matches("http.client", "http")
    assert not _matches("httpx", "http")
    assert not _matches("urllib.parse", "urllib.request")
    assert _matches("certfleet.lab.ca", "certfleet.lab")


def test_checker_finds_openssl_calls_in_every_spelling() -> None:
    """The shell-out scan sees subprocess, aliases, constants and asyncio spawns of openssl."""
    source = (
        "import subprocess as sp\n"
        "from subprocess import check_output\n"
        "import asyncio\n"
        "OPENSSL = 'openssl'\n"
        "sp.run(['openssl', 'x509'])\n"
        "check_output([OPENSSL, 'pkcs12'])\n"
        "asyncio.create_subprocess_exec('/usr/bin/openssl', 'req')\n"
        "sp.run(['ssh', 'host'])\n"
        "print('convert it with openssl')\n"
    )
    hits = tool_calls(source, _FAKE)
    assert [hit.split(":")[1].split()[0] for hit in hits] == ["5", "6", "7"]


# --- layers and circles, between files -------------------------------------

#: The layers, bottom up. A module may import its own layer and the layers below,
#: never one above; no two files may import each other, directly or round a circle.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "fsutil", "safetext"),
    ("model", "kinds", "pki", "secrets", "trust", "inventory_skeleton",
     "inventory_text"),
    ("inventory", "inventory_checks", "inventory_renewal", "dns", "notify", "credentials"),
    ("drivers",),
    ("acme", "scan", "estate", "discover"),
    ("web",),
    ("lab",),
    ("cli", "__main__", "__init__"),
)


def layer_of(module: str) -> int:
    """The layer of ``certfleet.PART...`` (the package itself is the top)."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: place it")


def file_graph() -> dict[str, dict[str, int]]:
    """Module → the certfleet modules it imports (anywhere in the file) → a line."""
    modules = {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for imp in imports_of(path.read_text(encoding="utf-8"), name, path,
                              is_package=path.name == "__init__.py"):
            target = imp.module
            while target and target not in modules:  # X.Y may be a name in module X
                target = target.rpartition(".")[0]
            if target and target not in (name, "certfleet"):
                edges.setdefault(target, imp.line)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one file (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer_and_no_import_runs_up() -> None:
    """No import, at module level or inside a function, reaches a higher layer."""
    graph = file_graph()
    assert len(graph) > 100, "the scan found too few modules"
    up = [f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)}) "
          f"at line {line}"
          for name, edges in graph.items() for target, line in edges.items()
          if layer_of(target) > layer_of(name)]
    assert not up, "imports that run up a layer:\n" + "\n".join(sorted(up))


def test_no_circle_between_files() -> None:
    """No two files import each other, directly or round a circle (imports in functions too)."""
    found = circles(file_graph())
    assert not found, "files that import each other:\n" + "\n".join(map(str, found))


def test_the_circle_check_finds_circles() -> None:
    """The check itself: a three-file circle and a two-file one are found, a chain is not."""
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"e": 1}, "e": {"d": 1},
             "f": {"a": 1}}
    assert circles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert layer_of("certfleet.cli.app") > layer_of("certfleet.estate.deploy")
    assert layer_of("certfleet.model") < layer_of("certfleet.inventory")


def test_every_type_ignore_and_noqa_names_its_code_and_reason() -> None:
    """``# type: ignore[code]`` and ``# noqa: CODE`` in the product say why, on the line."""
    import re

    marker = re.compile(r"type: ignore|noqa")
    reasoned = re.compile(
        r"(type: ignore\[[^\]]+\]|noqa: [A-Z0-9]+(, [A-Z0-9]+)*) *(#|-|—|:|\() *\S")
    bare = [f"{path.relative_to(PACKAGE_ROOT.parent)}:{number}: {line.strip()}"
            for path in sorted(PACKAGE_ROOT.rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if marker.search(line) and not reasoned.search(line)]
    assert not bare, "say why on the line:\n" + "\n".join(bare)


KIND_NAMES = frozenset({"ovoc", "sbc"})
KIND_NEUTRAL = ("estate", "acme", "pki")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def kind_rules(tree: ast.AST) -> list[tuple[int, str]]:
    """Comparisons with a built-in kind's name, and ``getattr`` on a driver or device."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            values = [e for side in sides
                      for e in (side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set)
                                else [side])]
            named = [v.value for v in values
                     if isinstance(v, ast.Constant) and v.value in KIND_NAMES]
            if named:
                found.append((node.lineno, f"compares with the kind name {named[0]!r}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and node.args):
            target = _dotted(node.args[0]).lower()
            if "driver" in target or "device" in target:
                found.append((node.lineno, f"{node.func.id}() on {_dotted(node.args[0])}"))
    return found


def test_the_core_compares_no_kind_name_and_reads_no_driver_attribute() -> None:
    """What estate/, acme/ and pki/ need of a kind comes from its declared contract."""
    bad = [f"{path.relative_to(PACKAGE_ROOT.parent)}:{line}: {what}"
           for part in KIND_NEUTRAL
           for path in sorted((PACKAGE_ROOT / part).rglob("*.py"))
           for line, what in kind_rules(ast.parse(path.read_text(encoding="utf-8")))]
    assert not bad, "vendor rules in the core:\n" + "\n".join(bad)


def test_the_kind_rule_check_finds_them() -> None:
    """The check itself: each spelling of a kind rule is found, a neutral comparison is not."""
    source = ("if device.kind == 'ovoc': pass\n"
              "if kind in ('sbc', 'x'): pass\n"
              "k = getattr(driver, 'previous_keys')\n"
              "h = hasattr(self.device, 'options')\n"
              "if kind == 'ip': pass\n"
              "v = getattr(error, 'detail', '')\n")
    assert [line for line, _ in kind_rules(ast.parse(source))] == [1, 2, 3, 4]
