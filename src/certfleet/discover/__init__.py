"""``certfleet discover``: take over an estate you do not know.

Find what answers on the targets (:mod:`.find`), recognise each host, read-only
(:mod:`.recognise`: an AudioCodes SBC, OVOC, or an unmanaged listener), relate
listeners to devices, TLS contexts and certificates, and write a commented
inventory (:mod:`.relate`). Credentials go only to proven hosts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ConfigError
from .find import count_endpoints, find, iter_endpoints
from .recognise import Credentials, Host, Pins, recognise
from .relate import Estate, relate, render_toml

__all__ = ["Credentials", "Estate", "Pins", "discover", "read_pins", "render_toml"]


def read_pins(path: Path) -> Pins:
    """The pins of a previous inventory (``tls_pin``, ``ssh_host_key``). Raises ConfigError."""
    hint = "give --pins-from an inventory a previous 'certfleet discover' wrote"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"cannot read --pins-from {path}: {exc.strerror or exc}", hint=hint,
                          path=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--pins-from {path} is not a TOML inventory: {exc}", hint=hint,
                          path=str(path)) from None
    except RecursionError:  # tomllib is recursive: arrays nested thousands deep
        raise ConfigError(f"--pins-from {path} is not a TOML inventory: nested too deep",
                          hint=hint, path=str(path)) from None
    pins = Pins()
    devices = data.get("devices", {})
    for device in devices.values() if isinstance(devices, dict) else []:
        if not isinstance(device, dict):
            continue
        tls, ssh = device.get("tls_pin"), device.get("ssh_host_key")
        if isinstance(tls, str) and tls:
            pins.tls.add(tls.replace(":", "").lower())
        if isinstance(ssh, str) and ssh.startswith("SHA256:"):
            pins.ssh.add(ssh.rstrip("="))
    if not pins.tls and not pins.ssh:
        raise ConfigError(f"--pins-from {path} holds no tls_pin and no ssh_host_key",
                          hint=hint, path=str(path))
    return pins


async def discover(targets: Sequence[str], *, extra_ports: Sequence[int] = (),
                   pins: Pins, credentials: Credentials, concurrency: int = 256,
                   timeout: float = 2.0, force: bool = False,
                   on_progress: Callable[[int], None] | None = None) -> Estate:
    """Find, recognise and relate. Raises ConfigError for bad targets."""
    count_endpoints(targets, extra_ports, force=force)
    found = await find(iter_endpoints(targets, extra_ports), concurrency=concurrency,
                       timeout=timeout, on_progress=on_progress)
    by_host: dict[str, Host] = {}
    for seen in found.answered:
        by_host.setdefault(seen.host, Host(seen.host, [])).seen.append(seen)
    hosts = list(by_host.values())
    await recognise(hosts, pins, credentials, timeout=max(timeout, 5.0),
                    concurrency=concurrency)
    return relate(hosts, silent=dict(found.silent), probed=found.probed,
                  tofu=pins.trust_on_first_use, credentials=credentials)

