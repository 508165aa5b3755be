"""Cold start: modules that typer imports for features certfleet does not use load on first use.

typer's rich help imports ``rich.markdown`` (with ``markdown_it``) for its
markdown markup mode and ``rich.traceback`` (with ``pygments``) for pretty
exceptions; typer imports its shell completion, which certfleet does not
install. Together a large part of a ``certfleet`` run that uses none of them
(see ``benchmarks/bench_toolkit.py``). (typer from 0.29 on also imports
pydantic and builds an adapter per parameter: pyproject keeps typer below it.)

``defer_unused_imports()`` installs an import hook under which each of these
modules is first a stand-in: its classes and functions are stand-ins that
import the real module and hand the call over, and any other name read from
it imports the real module, which then replaces the stand-in everywhere the
import system binds it. Nothing changes for a caller but the moment of the
import.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import ClassVar

__all__ = ["defer_unused_imports"]


class _StandIn:
    """How one module is stood in for: names of its classes, and shortcut functions.

    A shortcut is called first with the arguments of the call; ``None`` hands
    the call to the real function.
    """

    def __init__(self, name: str, classes: Sequence[str],
                 shortcuts: dict[str, Callable[..., object]]) -> None:
        self.name = name
        self.classes = classes
        self.shortcuts = shortcuts

    def real(self) -> types.ModuleType:
        module = sys.modules.get(self.name)
        if module is not None and not getattr(module, "__certfleet_stand_in__", False):
            return module
        sys.modules.pop(self.name, None)
        _Finder.stand_ins.pop(self.name, None)  # from now on the real module
        return importlib.import_module(self.name)

    def fill(self, module: types.ModuleType) -> None:
        real = self.real

        def attribute(name: str) -> object:
            if name.startswith("__"):  # the import system asks for __path__ and the like
                raise AttributeError(name)
            return getattr(real(), name)

        def stand_in_class(name: str) -> type:
            def new(cls: type, *args: object, **kwargs: object) -> object:
                return getattr(real(), name)(*args, **kwargs)

            return type(name, (), {"__new__": new, "__module__": self.name})

        def stand_in_function(
            name: str, first: Callable[..., object],
        ) -> Callable[..., object]:
            def call(*args: object, **kwargs: object) -> object:
                answer = first(*args, **kwargs)
                return getattr(real(), name)(*args, **kwargs) if answer is None else answer

            return call

        module.__certfleet_stand_in__ = True  # type: ignore[attr-defined]  # our mark
        module.__getattr__ = attribute  # type: ignore[method-assign]  # PEP 562 hook
        for name in self.classes:
            setattr(module, name, stand_in_class(name))
        for name, first in self.shortcuts.items():
            setattr(module, name, stand_in_function(name, first))


class _Finder:
    """A meta path finder that gives the stand-in of a deferred module."""

    stand_ins: ClassVar[dict[str, _StandIn]] = {}

    @classmethod
    def find_spec(
        cls, name: str, path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in cls.stand_ins:
            return None
        return importlib.machinery.ModuleSpec(name, cls)  # type: ignore[arg-type]  # loader

    @staticmethod
    def create_module(spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    @classmethod
    def exec_module(cls, module: types.ModuleType) -> None:
        cls.stand_ins[module.__name__].fill(module)


def _real(*args: object, **kwargs: object) -> None:
    """A shortcut that always hands the call to the real function."""
    return None


def defer_unused_imports() -> None:
    """Install the stand-ins (once; modules already imported stay as they are).

    Call it before typer is imported, or typer's completion module is loaded.
    """
    wanted = [
        _StandIn("rich.markdown", ["Markdown"], {}),
        _StandIn("rich.traceback", ["Traceback"], {}),
        # Shell completion, which certfleet does not install (add_completion=False).
        _StandIn("typer.completion", [], {"get_completion_inspect_parameters": _real,
                                          "shell_complete": _real}),
    ]
    for stand_in in wanted:
        if stand_in.name not in sys.modules:
            _Finder.stand_ins.setdefault(stand_in.name, stand_in)
    if _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)
