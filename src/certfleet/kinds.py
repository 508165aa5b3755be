"""The device kinds' declarations, found through the ``certfleet.drivers`` entry points.

What the inventory and the credentials need of a kind (the keys its devices
accept, the secrets it needs, its ports) is declared here, below them; the
driver side of a kind (:class:`certfleet.drivers.registry.DriverKind`: how a
driver is built, its rollback rule, its steps) extends it. The inventory
loader receives a :class:`KindCatalog` (by default :data:`INSTALLED`, the
entry points of the installed distributions) and never imports a driver.

Entry points are loaded lazily, the one named only: reading an inventory of
SBCs never imports the OVOC driver. A plugin that cannot be imported, or
whose entry point is not a kind, is named in a ConfigError with the
distribution it came from. The built-in kinds are also found when the
package runs from a source tree without installed metadata.

Nothing here imports anything above :mod:`certfleet.errors`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Protocol, runtime_checkable

from .errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "INSTALLED",
    "KeySpec",
    "KindCatalog",
    "KindSchema",
    "SecretSpec",
    "kind_names",
    "load_kind",
    "reset",
]

ENTRY_POINT_GROUP = "certfleet.drivers"

# Found also without installed metadata (a source tree on PYTHONPATH); an entry
# point of the same name takes precedence.
_BUILTIN = {
    "ovoc": "certfleet.drivers.ovoc_kind:KIND",
    "sbc": "certfleet.drivers.sbc_kind:KIND",
    "sftp": "certfleet.drivers.sftp:KIND",
}


# Types a kind-specific inventory key may have.
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "strings": (list,),
    "table": (dict,),
    "secret": (str,),
}


@dataclass(frozen=True)
class KeySpec:
    """One inventory key a kind accepts on its devices (and in ``[defaults.KIND]``).

    ``type``: ``string``, ``integer``, ``number``, ``boolean``, ``strings`` (a list
    of strings), ``table`` or ``secret`` (a reference: ``env:VAR``, ``file:PATH``,
    ``keyring:SERVICE/USER`` or ``prompt``, resolved into the credentials).
    ``what`` words the value in messages (``write KEY = <what>``).
    """

    type: str = "string"
    what: str = "a string"
    required: bool = False

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"KeySpec type {self.type!r} is not one of {', '.join(_TYPES)}")

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (as TOML gives it) has this key's type."""
        if isinstance(value, bool) and self.type != "boolean":
            return False
        if not isinstance(value, _TYPES[self.type]):
            return False
        if isinstance(value, list):
            return all(isinstance(v, str) and v for v in value)
        return True


@dataclass(frozen=True)
class SecretSpec:
    """A secret the kind needs: ``what`` it is called in prompts and messages,
    and whether a device without it is refused."""

    what: str
    required: bool = True



@runtime_checkable
class KindSchema(Protocol):
    """What the inventory and the credentials read of a kind (a ``DriverKind`` has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def schema(self) -> Mapping[str, KeySpec]: ...
    @property
    def secrets(self) -> Mapping[str, SecretSpec]: ...
    @property
    def default_port(self) -> int: ...
    @property
    def port_alias(self) -> str | None: ...
    @property
    def listener_port(self) -> str: ...


class KindCatalog(Protocol):
    """The kinds an inventory may name: :data:`INSTALLED`, or a test's own."""

    def names(self) -> list[str]:
        """Every kind's name, sorted (without importing any)."""
        ...

    def get(self, name: str) -> KindSchema:
        """The kind ``name``. Raises ConfigError naming the fix."""
        ...


_loaded: dict[str, KindSchema] = {}
_entry_points: dict[str, EntryPoint | str] | None = None


def _discover() -> dict[str, EntryPoint | str]:
    """Name → entry point (or built-in ``module:attr`` text), read once."""
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        found: dict[str, EntryPoint | str] = dict(_BUILTIN)
        for point in entry_points(group=ENTRY_POINT_GROUP):
            found[point.name] = point
        _entry_points = found
    return _entry_points


def reset() -> None:
    """Forget what was discovered and loaded (after installing a plugin at run time)."""
    global _entry_points
    _entry_points = None
    _loaded.clear()


def kind_names() -> list[str]:
    """Every registered kind, sorted (without importing any)."""
    return sorted(_discover())


def _load(point: EntryPoint | str) -> object:
    if isinstance(point, str):
        module, _, attr = point.partition(":")
        loaded: object = getattr(importlib.import_module(module), attr)
        return loaded
    return point.load()


def load_kind(name: str) -> KindSchema:
    """The kind registered as ``name``, imported on first use. Raises ConfigError."""
    kind = _loaded.get(name)
    if kind is not None:
        return kind
    points = _discover()
    point = points.get(name)
    if point is None:
        raise ConfigError(
            f"no driver for device kind {name!r} (known: {', '.join(sorted(points))})",
            hint=f"fix the kind, or install the package that provides {name!r} "
            f"(it registers it in the {ENTRY_POINT_GROUP!r} entry points)",
        )
    origin = origin_of(point)
    try:
        loaded = _load(point)
    except Exception as exc:  # a broken plugin: say which, never a traceback
        raise ConfigError(
            f"the driver plugin for kind {name!r} ({origin}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}",
            hint="reinstall or remove that package; 'pip show' names its version",
        ) from exc
    if not isinstance(loaded, KindSchema) or loaded.name != name:
        raise not_a_kind(name, origin)
    _loaded[name] = loaded
    return loaded


def not_a_kind(name: str, origin: str) -> ConfigError:
    """The error for an entry point that is not a ``DriverKind`` named ``name``."""
    return ConfigError(
        f"the driver plugin for kind {name!r} ({origin}) is not a DriverKind named {name!r}",
        hint="its entry point must name a certfleet.drivers.registry.DriverKind "
        "(see docs/drivers.md)",
    )


def origin_of(point: EntryPoint | str) -> str:
    """Where entry point ``point`` comes from, for messages."""
    if isinstance(point, str):
        return point
    dist = point.dist
    where = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"{point.value}{where}"


def origin(name: str) -> str:
    """Where kind ``name`` comes from (its entry point), for messages."""
    point = _discover().get(name)
    return origin_of(point) if point is not None else name


class _Installed:
    """The kinds of the installed distributions' entry points (and the built-in ones)."""

    def names(self) -> list[str]:
        return kind_names()

    def get(self, name: str) -> KindSchema:
        return load_kind(name)


#: The catalog of the installed kinds: what every command reads an inventory with.
INSTALLED: KindCatalog = _Installed()
