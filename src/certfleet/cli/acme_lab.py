"""``lab up --acme`` and ``demo --acme``: the lab estate with Pebble as its ACME CA."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from .common import console, err_console, fail

if TYPE_CHECKING:
    from ..estate.renew import RenewReport
    from ..estate.store import Store
    from ..lab.estate import LabEstate
    from ..lab.pebble import LabPebble

NOTIFY_ENV = "CERTFLEET_LAB_NOTIFY_URL"


def require_pebble() -> None:
    """Exit 2 with the install command when Pebble is not installed."""
    from ..lab.pebble import PEBBLE_INSTALL_HINT, pebble_missing

    missing = pebble_missing()
    if missing:
        fail(f"--acme needs {' and '.join(missing)}, which is not installed",
             PEBBLE_INSTALL_HINT)


def attach_pebble(lab: LabEstate, where: Path) -> LabPebble:
    """Start Pebble for ``lab`` and make its inventory order from it, notices to a file."""
    from ..fsutil import write_private_file
    from ..lab.pebble import LabPebble, add_acme_to_inventory

    try:
        pebble = LabPebble(where / "pebble").start()
    except Exception as exc:  # a missing program, a port, a certificate refused: all in words
        fail(f"Pebble did not start: {_one_line(exc)}", _start_hint(exc, where / "pebble"))
    try:
        add_acme_to_inventory(lab.inventory_path, pebble, notify_env=NOTIFY_ENV)
        sink = where / "notifications.jsonl"
        lab.env[NOTIFY_ENV] = sink.resolve().as_uri()
        text = lab.env_path.read_text(encoding="utf-8")
        write_private_file(lab.env_path,
                           (text + f"{NOTIFY_ENV}={lab.env[NOTIFY_ENV]}\n").encode())
    except Exception as exc:
        pebble.stop()
        fail(f"Pebble started but the lab inventory could not be set up for it: "
             f"{_one_line(exc)}", "check the free disk space and the lab folder, then try again")
    except BaseException:
        pebble.stop()
        raise
    return pebble


def _start_hint(exc: Exception, folder: Path) -> str:
    """The Tip for a Pebble that did not start: what its error (or log) names as the cause."""
    from ..lab.pebble import PEBBLE_INSTALL_HINT

    program = ("check that 'pebble -h' and 'pebble-challtestsrv -h' run, then try again; "
               f"if not, {PEBBLE_INSTALL_HINT}")
    if isinstance(exc, OSError):  # the program itself could not be started
        return program
    text = str(exc).lower()
    if "address already in use" in text:
        return "another program took a port chosen for Pebble meanwhile: run the command again"
    if "no such file or directory" in text or "permission denied" in text:
        return (f"Pebble could not open a file certfleet wrote for it in {folder.resolve()}: "
                "check that the folder is writable and nothing removes files from it, "
                "then try again")
    if "did not answer within" in text:
        return "Pebble started but did not answer in time (a busy machine?): try again"
    return program


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line (Pebble's log tail spans lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _set_renew_before(lab: LabEstate, days: int) -> None:
    from ..fsutil import write_file_atomic

    text = lab.inventory_path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^renew_before_days = \d+$", f"renew_before_days = {days}", text)
    write_file_atomic(lab.inventory_path, text.encode())


def _renew(lab: LabEstate, store: Store, title: str) -> RenewReport:
    import asyncio

    from ..estate.devices import make_factory
    from ..estate.renew import run_renew
    from ..inventory import load_inventory
    from .estate import Progress, render_report

    console.print(f"$ certfleet renew   [dim]({title})[/]")
    from ..credentials import Credentials

    inventory = load_inventory(lab.inventory_path)
    factory = make_factory(store, Credentials.resolve(inventory.devices.values()))
    with Progress(list(inventory.devices), quiet=False) as progress:
        report = asyncio.run(run_renew(
            inventory, store, factory,
            log=lambda text: err_console.print(text, markup=False, highlight=False,
                                               soft_wrap=True),
            on_event=progress.event, on_result=progress.result,
        ))
    for item in report.items:
        action = item.action if item.action != "none" else "not due"
        console.print(f"{item.certificate}: {action} ({item.reason})", markup=False)
    if report.deploy is not None and report.ordered:
        console.print(render_report(report.deploy))
    console.print(f"renew: {report.ordered} ordered; exit code {report.exit_code}")
    return report


def run_acme_demo() -> int:
    """The unattended story on the lab; returns its exit code and leaves nothing running."""
    from .demo_lab import demo_estate

    require_pebble()
    with demo_estate("certfleet-acme-demo-",
                     "[bold]certfleet demo --acme[/]: unattended renewal of a lab estate "
                     "(1 OVOC, 3 SBCs) from Pebble, a real ACME CA, by DNS-01",
                     "Start the lab estate, Pebble and pebble-challtestsrv (the DNS Pebble asks)"
                     ) as (work, lab, store):
        pebble = attach_pebble(lab, work)
        try:
            return _acme_story(work, lab, store, pebble)
        finally:
            pebble.stop()


def _acme_story(work: Path, lab: LabEstate, store: Store, pebble: LabPebble) -> int:
    import asyncio
    import json

    from ..estate.status import collect_status
    from ..inventory import load_inventory
    from .demo_lab import _step
    from .estate import render_status

    console.print(f"ACME directory {pebble.directory_url}; DNS {pebble.dns_server}; "
                  f"notifications to {work / 'notifications.jsonl'}", soft_wrap=True,
                  markup=False)
    with lab.environment():
        inventory = load_inventory(lab.inventory_path)
        console.print(render_status(asyncio.run(collect_status(inventory, store)),
                                    inventory.expiry_warn_days))
        _step(2, "The nightly run when nothing is due (renew_before_days = 3)")
        _set_renew_before(lab, 3)
        first = _renew(lab, store, "nothing due: no CA asked, nothing ordered")
        _step(3, "The certificate is now inside the renewal window (renew_before_days = 30)")
        _set_renew_before(lab, 30)
        second = _renew(lab, store, "orders by DNS-01, deploys OVOC first, verifies")
        _step(4, "The next run: nothing to do")
        third = _renew(lab, store, "the renewed certificate is served everywhere")
        _step(5, "Status after, and the notification sent")
        inventory = load_inventory(lab.inventory_path)
        after = asyncio.run(collect_status(inventory, store))
        console.print(render_status(after, inventory.expiry_warn_days))
        sink = work / "notifications.jsonl"
        for line in sink.read_text(encoding="utf-8").splitlines() if sink.exists() else []:
            told = json.loads(line)
            console.print(f"[bold]{told['event']}[/]: {told['title']}")
            console.print(told["body"], markup=False, highlight=False, soft_wrap=True)
    codes = [first.exit_code, second.exit_code, third.exit_code]
    ok = (codes == [0, 0, 0] and first.ordered == 0 and second.ordered == 1
          and third.ordered == 0 and all(s.is_current for s in after))
    if not ok:
        err_console.print(f"[bold red]demo failed:[/] renew exit codes {codes}; ordered "
                          f"{first.ordered}, {second.ordered}, {third.ordered}")
        return max(codes) or 1
    console.print(f"\n[bold green]done[/]: {len(after)} devices serve the certificate "
                  "Pebble issued; the lab is stopped and its files removed.")
    return 0
