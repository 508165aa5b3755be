"""``certfleet lab up`` and ``certfleet demo``: the lab estate, and the whole job on it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..safetext import visible
from .common import console, err_console, handle_errors
from .demo_lab import _seed_previous as _seed_previous
from .demo_lab import _step, demo_estate

if TYPE_CHECKING:
    from ..estate.store import Store
    from ..estate.store.versions import VersionRecord
    from ..inventory import Inventory
    from ..lab.estate import LabEstate
    from ..scan.engine import ScanResult

DIR_OPTION = typer.Option(
    None, "--dir", help="Where to write the inventory, secrets and state (kept)."
)


def _scan_lab(lab: LabEstate, store: Store) -> None:
    """The demo's last step: scan the lab's address range, inventory included."""
    from .scan import _prepare, _summary, run_scan
    from .scan_table import render_table

    # The SBCs' management ports too: each is a listener of its device (its `port`).
    ports = ",".join(str(p) for p in sorted({*lab.tls_ports, *lab.management_ports}))
    _step(9, "Scan the lab's range for every TLS listener: certfleet scan --inventory "
             "127.0.0.1/32:PORTS --ca-bundle lab-ca.pem --ca-bundle lab-sbc-ca.pem")
    plan = _prepare([f"127.0.0.1/32:{ports}"], None, True, lab.inventory_path, store.root, None,
                    [lab.ca_path, lab.sbc_ca_path])
    results = run_scan(plan, 100, 10.0, progress=False)
    console.print(render_table(results, title="Scan of the lab"))
    console.print(_summary(results), markup=False, highlight=False)
    for line in stray_lines(results):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def stray_lines(results: list[ScanResult]) -> list[str]:
    """A line for each endpoint that serves TLS and is in no inventory; one serving the
    certificate of a listed endpoint on its host names that endpoint's device."""
    from ..pki.model import cert_sha256

    known: dict[tuple[str, str], ScanResult] = {}
    for result in results:
        if result.listed and result.leaf is not None and result.endpoint.device:
            known.setdefault((result.endpoint.host.lower(), cert_sha256(result.leaf)), result)
    lines = []
    for result in results:
        if result.listed is not False or result.leaf is None:
            continue
        subject = visible(result.to_dict()["leaf"]["subject"])
        twin = known.get((result.endpoint.host.lower(), cert_sha256(result.leaf)))
        if twin is None:
            lines.append(f"found: {visible(str(result.endpoint))} serves {subject} and is in no "
                         "inventory: add it, or switch it off")
            continue
        device = twin.endpoint.device
        label = f" {twin.endpoint.label}" if twin.endpoint.label else ""
        lines.append(f"found: {visible(str(result.endpoint))} serves {subject}, the "
                     f"certificate of {device}{label} ({twin.endpoint}), and is in no inventory: "
                     f"add it to {device}'s listeners, or switch it off")
    return lines


def serve_lab(lab: LabEstate, state: Path) -> None:
    """``demo --serve``: the dashboard of the lab until Ctrl-C, with a user and password
    printed (an operator, so the page's actions work on the lab)."""
    import secrets

    from ..estate.store import Store
    from ..web.app import WebConfig, create_app
    from ..web.server import bind, serve
    from ..web.users import USERS_FILE, Users
    from ..web.view import EstateView

    password = secrets.token_urlsafe(12)
    Users(state / USERS_FILE).add_user("demo", password, "operator")
    reader = Store.open_readonly(state)
    view = EstateView(lab.inventory_path, reader, refresh=300)
    view.scan()
    view.start()
    config = WebConfig(lab.inventory_path, state, state / USERS_FILE)

    def ready(url: str) -> None:
        console.print(f"dashboard: {url}  user: demo  password: {password}  "
                      "(Ctrl-C stops it and the lab)", markup=False, highlight=False,
                      soft_wrap=True)

    try:
        with lab.environment():
            serve(create_app(config, view), bind("127.0.0.1", 0), tls_cert=None,
                  tls_key=None, on_ready=ready)
    finally:
        view.stop()
        reader.close()


def _renew_wildcard(
    work: Path, lab: LabEstate, inventory: Inventory, store: Store,
) -> VersionRecord:
    """Steps 3 to 5 of the demo: the key and CSR, the CA's answer, its import."""
    from ..estate.csr import make_inventory_csr
    from ..estate.importer import import_certificate
    from .estate import print_findings

    _step(3, "Make the key (kept in the state store) and the CSR: certfleet csr wildcard")
    made = make_inventory_csr("wildcard", inventory=inventory, store=store,
                              out_dir=work / "csr")
    console.print(f"key stored: {made.key_path.name} (0600), spki "
                  f"{made.key.spki_sha256[:16]}…; CSR for "
                  f"{', '.join(inventory.certificates['wildcard'].names)}",
                  soft_wrap=True)

    _step(4, "The CA issues the renewed wildcard: a .crt and a .p7b (chain in the "
             "wrong order)")
    issued = lab.ca.issue(csr=made.csr)
    download = work / "from-the-ca"
    download.mkdir()
    (download / "star_example_com.crt").write_bytes(issued.leaf_pem)
    (download / "star_example_com.p7b").write_bytes(issued.p7b(wrong_order=True))
    console.print("received: star_example_com.crt, star_example_com.p7b (no key)")

    _step(5, "Import and check: certfleet import wildcard star_example_com.crt "
             "star_example_com.p7b")
    imported = import_certificate(
        inventory, store, "wildcard",
        [download / "star_example_com.crt", download / "star_example_com.p7b"],
    )
    print_findings(imported.findings)
    version = imported.version
    console.print(f"[green]stored[/] wildcard v{version.number}: {version.subject}, "
                  f"valid to {version.not_after[:10]}, key found in the store "
                  "by public key")
    return version


def run_demo(*, serve: bool = False) -> int:
    """The demo; returns its exit code. Everything it starts is stopped, its files removed
    (with ``serve``, after the dashboard of the lab has run until Ctrl-C)."""
    import asyncio

    from ..estate.devices import make_factory
    from ..estate.options import DeployOptions
    from ..estate.plan import make_plan
    from ..estate.status import collect_status
    from ..inventory import load_inventory
    from .estate import render_plan, render_report, render_status, run_deploy_cli

    with demo_estate("certfleet-demo-",
                     "[bold]certfleet demo[/]: renew the wildcard certificate of a lab estate "
                     "(1 OVOC, 3 SBCs, one of them an HA pair) on 127.0.0.1",
                     "Start the lab estate, serving last year's certificate") as (work, lab, store):
        inventory = load_inventory(lab.inventory_path)
        console.print(f"inventory: {lab.inventory_path} ({len(inventory.devices)} devices); "
                      f"state: {store.root}", soft_wrap=True)
        with lab.environment():
            _step(2, "Status before: what every listener serves (by handshake)")
            before = asyncio.run(collect_status(inventory, store))
            console.print(render_status(before, inventory.expiry_warn_days))

            version = _renew_wildcard(work, lab, inventory, store)

            _step(6, "Plan: certfleet plan")
            plans = asyncio.run(make_plan(inventory, store))
            console.print(render_plan(plans))

            _step(7, "Deploy to every device: certfleet deploy --canary ovoc")
            from ..credentials import Credentials

            factory = make_factory(store, Credentials.resolve(inventory.devices.values()))
            options = DeployOptions(canary="ovoc" if "ovoc" in inventory.devices else None)
            report = run_deploy_cli(inventory, store, factory, options, quiet=False)
            console.print(render_report(report))

            _step(8, "Verify by handshake and show the status after: certfleet status")
            after = asyncio.run(collect_status(inventory, store))
            console.print(render_status(after, inventory.expiry_warn_days))

            _scan_lab(lab, store)
        not_current = [s.name for s in after if not s.is_current]
        if report.exit_code != 0 or not_current:
            err_console.print(f"[bold red]demo failed:[/] deploy exit {report.exit_code}; "
                              f"not serving v{version.number}: {', '.join(not_current) or 'none'}")
            return report.exit_code or 1
        console.print()
        if serve:
            console.print(f"[bold green]done[/]: {len(after)} devices serve wildcard "
                          f"v{version.number} on every listener; the dashboard of the lab:")
            serve_lab(lab, store.root)
            return 0
        console.print(f"[bold green]done[/]: {len(after)} devices serve wildcard v{version.number} "
                      f"on every listener; the lab is stopped and its files removed.")
        return 0


# ---- lab up ---------------------------------------------------------------------------

BY_HAND_PFX = "wildcard-last-year.pfx"
BY_HAND_PASSWORD_VAR = "CERTFLEET_LAB_PFX_PASSWORD"


def _self_command() -> list[str]:
    """How this certfleet was started, to paste in another shell: the full path of the
    ``certfleet`` executable, or ``python -m certfleet`` with this interpreter's full path."""
    import sys

    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.stem == "certfleet" and argv0.is_file():
        return [str(argv0.absolute())]
    return [sys.executable, "-m", "certfleet"]


def _write_last_year_pfx(lab: LabEstate) -> Path:
    """The certificate the lab serves, with its key and chain, as the pfx a Windows tool
    exported last year; its password is ``$CERTFLEET_LAB_PFX_PASSWORD`` in lab.env."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from ..fsutil import write_private_file

    old = lab.old
    assert old.key is not None
    password = lab.env[BY_HAND_PASSWORD_VAR].encode()
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .build(password)
    )
    data = pkcs12.serialize_key_and_certificates(
        b"wildcard", old.key, old.leaf, [*old.chain, old.root], encryption)
    return write_private_file(lab.directory / BY_HAND_PFX, data)


def _print_spread(lab: LabEstate) -> None:
    """A spread lab's devices, one address each, and the discovery of its range."""
    import shlex

    spread = lab.spread
    assert spread is not None
    ports = spread.ports
    console.print(f"devices (ports on every address: https {ports['https']}, sip-tls "
                  f"{ports['sip']}, teams {ports['teams']}, ssh {ports['ssh']}):",
                  soft_wrap=True, markup=False)
    for name, address in spread.addresses.items():
        kind = "OVOC" if name == "ovoc" else "SBC HA unit" if "-ha-" in name else "SBC"
        console.print(f"  {address:<15}  {kind:<11}  {name}", soft_wrap=True, markup=False,
                      highlight=False)
    console.print(f"  {spread.unmanaged:<15}  {'TLS':<11}  a listener nobody manages",
                  soft_wrap=True, markup=False, highlight=False)
    cf = shlex.join(_self_command())
    port_list = ",".join(str(ports[r]) for r in ("https", "sip", "teams", "ssh"))
    console.print("Take it over as an estate you do not know (in another shell):",
                  soft_wrap=True)
    console.print(f"  {cf} discover {spread.network}:{port_list} --out discovered.toml",
                  soft_wrap=True, markup=False, highlight=False)


def _print_devices(lab: LabEstate) -> None:
    """Every device with its address and ports, one line each."""
    if lab.spread is not None:
        _print_spread(lab)
        return
    rows: list[tuple[str, str, str]] = []
    if lab.ovoc is not None:
        rows.append(("ovoc", "OVOC", f"ssh 127.0.0.1:{lab.ovoc.ssh_port}  "
                                     f"https 127.0.0.1:{lab.ovoc.https_port}"))
    for name, sbc in lab.sbcs.items():
        ports = f"rest https://127.0.0.1:{sbc.port}  sip-tls 127.0.0.1:{sbc.sip_port}"
        if sbc.teams_port is not None:
            ports += f", teams 127.0.0.1:{sbc.teams_port}"
        rows.append((name, "SBC", ports))
    for name, pair in lab.pairs.items():
        units = []
        for role, unit in (("active", pair.active), ("standby", pair.standby)):
            ports = f"sip-tls 127.0.0.1:{unit.sip_port}"
            if unit.teams_port is not None:
                ports += f", teams 127.0.0.1:{unit.teams_port}"
            units.append(f"{role}: {ports}")
        rows.append((name, "SBC HA pair",
                     f"rest https://127.0.0.1:{pair.active.port}  " + "; ".join(units)))
    width = max(len(name) for name, _, _ in rows)
    console.print("devices:", soft_wrap=True)
    for name, kind, ports in rows:
        console.print(f"  {name:<{width}}  {kind:<11}  {ports}", soft_wrap=True, markup=False,
                      highlight=False)


def next_steps(lab: LabEstate, state: Path, *, by_hand: bool, acme: bool = False) -> list[str]:
    """The shell commands that renew the lab, each runnable as printed: by hand (a CSR
    signed by the lab CA), or with ``acme`` from Pebble by DNS-01 (``certfleet renew``)."""
    import shlex

    cf = shlex.join(_self_command())
    q = shlex.quote
    renewal = lab.directory / "renewal"
    steps = [
        f"set -a; . {q(str(lab.env_path))}; set +a",
        f"export CERTFLEET_INVENTORY={q(str(lab.inventory_path))} "
        f"CERTFLEET_STATE_DIR={q(str(state))}",
        f"{cf} status",
    ]
    if by_hand:
        # What the devices serve today, with its key: the first deploy can roll back.
        steps.append(f"{cf} adopt wildcard {q(str(lab.directory / BY_HAND_PFX))} "
                     f"--password-env {BY_HAND_PASSWORD_VAR}")
    if acme:
        # The lab's certificate is inside renew_before_days: the first run orders.
        return [*steps, f"{cf} renew --dry-run", f"{cf} renew", f"{cf} status"]
    steps += [
        f"{cf} csr wildcard --out-dir {q(str(renewal))}",
        f"{cf} lab sign {q(str(renewal / 'wildcard.csr'))} --dir {q(str(lab.directory))} "
        f"--out-dir {q(str(renewal))}",
        f"{cf} import wildcard {q(str(renewal / 'star_example_com.crt'))} "
        f"{q(str(renewal / 'star_example_com.p7b'))}",
        f"{cf} plan",
        f"{cf} deploy",
    ]
    return steps


def _stop_signals() -> list[int]:
    """SIGTERM and SIGHUP where the platform has them: they stop the lab like Ctrl-C."""
    import signal

    return [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


def _interrupt(signum: int, frame: object) -> None:
    import signal

    raise KeyboardInterrupt(signal.Signals(signum).name)


def _print_lab_up(
    lab: LabEstate, state: Path, pfx: Path | None, *, by_hand: bool, acme: bool,
) -> None:
    """What ``lab up`` started, where its files are, and the steps to renew it."""
    console.print(f"[bold]lab estate up[/]: {', '.join(lab.device_names)}, serving a "
                  f"wildcard with {lab.old.leaf.not_valid_after_utc:%Y-%m-%d} as its "
                  "end date", soft_wrap=True)
    _print_devices(lab)
    console.print(f"  inventory: {lab.inventory_path}", soft_wrap=True, markup=False)
    console.print(f"  secrets:   {lab.env_path} (0600)", soft_wrap=True, markup=False)
    console.print(f"  lab CA:    {lab.ca_dir} (signs with 'certfleet lab sign')",
                  soft_wrap=True, markup=False)
    if by_hand:
        console.print(f"  state:     {state} (empty: an estate set up by hand)",
                      soft_wrap=True, markup=False)
        console.print(f"  last year: {pfx} (its password: ${BY_HAND_PASSWORD_VAR} in "
                      "lab.env)", soft_wrap=True, markup=False)
    else:
        console.print(f"  state:     {state} (last renewal imported as v1)",
                      soft_wrap=True, markup=False)
    how = "from Pebble (ACME, DNS-01)" if acme else "by hand"
    console.print(f"Renew it {how} in another shell (each line runs as printed):",
                  soft_wrap=True)
    for step in next_steps(lab, state, by_hand=by_hand, acme=acme):
        console.print(f"  {step}", soft_wrap=True, markup=False, highlight=False)


def run_lab_up(sbcs: int, directory: Path | None, *, by_hand: bool, acme: bool = False,
               spread: str | None = None) -> int:
    """``certfleet lab up``: start, print, serve until Ctrl-C/SIGTERM/SIGHUP, clean up."""
    import secrets
    import shutil
    import signal
    import tempfile

    from ..estate.store import Store
    from ..lab.estate import LabEstate

    if acme:
        from .acme_lab import require_pebble

        require_pebble()
    stops = _stop_signals()
    previous = {number: signal.signal(number, _interrupt) for number in stops}
    temporary = directory is None
    where: Path | None = None
    lab: LabEstate | None = None
    pebble = None
    try:
        try:
            # Absolute: Pebble runs in a folder of its own, and the printed steps are
            # pasted into other shells, whose working folder may differ.
            where = Path(tempfile.mkdtemp(prefix="certfleet-lab-")) if directory is None \
                else directory.expanduser().resolve()
            try:
                lab = LabEstate(where, sbcs=sbcs, spread=spread)
            except ValueError as exc:
                from ..errors import ConfigError

                raise ConfigError(str(exc), hint="give --spread-range a 127.x.y.z range with "
                                  "enough addresses, e.g. 127.0.1.0/28") from None
            if by_hand:
                lab.env[BY_HAND_PASSWORD_VAR] = secrets.token_urlsafe(12)
            lab.start()
            if acme:
                from .acme_lab import attach_pebble

                pebble = attach_pebble(lab, where)
                console.print(f"Pebble: {pebble.directory_url} (DNS-01 through challtestsrv "
                              f"{pebble.dns_server})", soft_wrap=True, markup=False)
            state = where / "state"
            pfx = None
            if by_hand:
                pfx = _write_last_year_pfx(lab)
            else:
                with Store.open(state) as store:
                    _seed_previous(lab, store)
            _print_lab_up(lab, state, pfx, by_hand=by_hand, acme=acme)
            console.print("Press Ctrl-C to stop the lab.")
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt as interrupt:
            why = str(interrupt.args[0]) if interrupt.args else "Ctrl-C"
            console.print(f"stopping the lab ({why})", markup=False)
    finally:
        # Stopping is bounded (each server waits at most a few seconds): it finishes even
        # when another signal arrives, so no temporary folder (one holds a key) is left.
        for number in [*stops, signal.SIGINT]:
            signal.signal(number, signal.SIG_IGN)
        try:
            if lab is not None:
                lab.stop()
            if pebble is not None:
                pebble.stop()
            if temporary and where is not None:
                shutil.rmtree(where, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for number, handler in previous.items():
                signal.signal(number, handler)
    return 0


# ---- lab sign -------------------------------------------------------------------------


def _file_stem(common_name: str) -> str:
    """A CA's download name for a CN: ``*.example.com`` -> ``star_example_com``."""
    text = common_name.replace("*", "star")
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in text).strip("_") or "cert"


def run_lab_sign(csr_path: Path, directory: Path | None, out_dir: Path | None,
                 days: int) -> tuple[Path, Path]:
    """Issue a certificate for the CSR with the lab CA in ``directory``; the .crt and .p7b."""
    import os

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from ..errors import CertificateError, ConfigError
    from ..fsutil import write_file_atomic
    from ..lab.ca import LabCA
    from ..lab.estate import LabEstate
    from ..pki.load import load_files

    if directory is None:
        inventory = os.environ.get("CERTFLEET_INVENTORY")
        if not inventory:
            raise ConfigError("no lab folder given",
                              hint="pass --dir DIR, the folder 'certfleet lab up' printed")
        directory = Path(inventory).parent
    ca_dir = LabEstate.ca_dir_of(directory)
    try:
        ca = LabCA.load(ca_dir)
    except ValueError as exc:
        raise ConfigError(str(exc), hint="pass --dir DIR, the folder 'certfleet lab up' "
                                         "printed (it holds lab-ca/)") from None
    requests = [o for o in load_files([csr_path]) if o.type == "csr"]
    if len(requests) != 1:
        raise CertificateError(
            f"{csr_path} holds {len(requests)} certificate requests (CSRs), not one",
            hint="give the .csr file 'certfleet csr' wrote")
    request = requests[0].value
    assert isinstance(request, x509.CertificateSigningRequest)
    if not request.is_signature_valid:
        raise CertificateError(f"the CSR in {csr_path} is not signed by its own key",
                               hint="make a new one with 'certfleet csr'")
    issued = ca.issue(csr=request, days=days)
    cns = issued.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    stem = _file_stem(str(cns[0].value) if cns else csr_path.stem)
    target = out_dir if out_dir is not None else csr_path.parent
    crt = write_file_atomic(target / f"{stem}.crt", issued.leaf_pem)
    p7b = write_file_atomic(target / f"{stem}.p7b", issued.p7b(wrong_order=True))
    return crt, p7b


def register(app: typer.Typer) -> None:
    lab_app = typer.Typer(help="The lab estate: simulated OVOC and SBCs on 127.0.0.1.",
                          no_args_is_help=True)
    app.add_typer(lab_app, name="lab")

    @lab_app.command("up")
    @handle_errors
    def lab_up(
        sbcs: int = typer.Option(3, "--sbcs", min=1, help="Lab SBCs (the last is an HA pair)."),
        directory: Path | None = DIR_OPTION,
        by_hand: bool = typer.Option(
            False, "--by-hand",
            help="Start as an estate set up by hand: an empty state store, and last year's "
                 f"certificate as {BY_HAND_PFX} in the lab folder (its password in lab.env)."),
        acme: bool = typer.Option(
            False, "--acme", help="Also start Pebble (ACME CA) and challtestsrv (its DNS)."),
        spread: bool = typer.Option(
            False, "--spread",
            help="Put every device on a loopback address of its own (--spread-range), with "
                 "the same ports on each, and add a TLS listener nobody manages: an estate "
                 "to take over with certfleet discover."),
        spread_range: str = typer.Option(
            "127.0.1.0/28", "--spread-range", help="The 127.x range of --spread."),
    ) -> None:
        """Start a lab OVOC, N lab SBCs and a lab CA; run until Ctrl-C (or SIGTERM/SIGHUP)."""
        raise typer.Exit(run_lab_up(sbcs, directory, by_hand=by_hand, acme=acme,
                                    spread=spread_range if spread else None))

    @lab_app.command("sign")
    @handle_errors
    def lab_sign(
        csr: Annotated[Path, typer.Argument(help="The certificate request (CSR) to sign.")],
        directory: Annotated[Path | None, typer.Option(
            "--dir",
            help="The lab folder ('certfleet lab up --dir', printed by lab up); default: the "
                 "folder of $CERTFLEET_INVENTORY.")] = None,
        out_dir: Annotated[Path | None, typer.Option(
            "--out-dir",
            help="Where to write the .crt and .p7b (default: the CSR's folder).")] = None,
        days: Annotated[int, typer.Option(
            "--days", min=1, max=398, help="Validity in days (public CAs: at most 398).")] = 199,
    ) -> None:
        """Have the lab CA issue a certificate for CSR, handed over as CAs do: a .crt (the
        leaf) and a .p7b (the chain with its root, in the wrong order)."""
        crt, p7b = run_lab_sign(csr, directory, out_dir, days)
        console.print(f"issued by the lab CA: {crt} (the certificate) and {p7b} (the chain)",
                      soft_wrap=True, markup=False, highlight=False)

    @app.command("demo")
    @handle_errors
    def demo(
        acme: bool = typer.Option(
            False, "--acme", help="The unattended story: renew from Pebble by DNS-01."),
        serve: bool = typer.Option(
            False, "--serve", help="End with the dashboard of the lab (certfleet serve) "
            "until Ctrl-C; a user and password are printed."),
    ) -> None:
        """Renew and deploy a wildcard across a lab estate, end to end (starts nothing lasting)."""
        if acme:
            if serve:
                from .common import fail

                fail("--serve goes with the demo without --acme",
                     "run certfleet demo --serve")
            from .acme_lab import run_acme_demo

            raise typer.Exit(run_acme_demo())
        raise typer.Exit(run_demo(serve=serve))
