"""``certfleet schedule systemd|cron|windows``: run renew unattended, the way each platform does.

Twice a day with a random delay, as certbot's timer does: a CA sees no
thundering herd at midnight, and a failed run is retried within hours.
Each run first tells expiring certificates (``status --notify``, its
failure ignored) and then renews. With ``--install`` the schedule is put
in place where that can be done without guessing: the systemd units (the
system's as root, the user's otherwise), the user's crontab, or the
Windows Task Scheduler.

A schedule that cannot work is refused (exit 2): an inventory that
references ``env:`` secrets needs ``--env-file`` (systemd, cron), a file
that exists, is not readable by others and defines every one of them. The
output ends with the one command that tests the job as the scheduler runs it
(a dry run in the scheduler's own environment), on stderr.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from .common import console, err_console, fail, handle_errors
from .estate import INVENTORY_OPTION, STATE_OPTION, STATE_URL_OPTION

UNIT = "certfleet-renew"
KINDS = ("systemd", "cron", "windows")
ENV_FILE_OPTION = typer.Option(
    None, "--env-file", help="A file of VAR=value secrets the runs load (keep it 0600).")


def _command(inventory: Path, state_dir: Path | None, *args: str,
             state_url: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "certfleet", *args, "--inventory", str(inventory.resolve())]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir.resolve())]
    if state_url:
        argv += ["--state-url", state_url]
    return argv


def check_state_url(state_url: str | None) -> None:
    """Refuse (exit 2) a --state-url with a password: it would be written into the job."""
    from urllib.parse import urlsplit

    if not state_url:
        return
    try:
        password = urlsplit(state_url).password
    except ValueError:
        password = None
    if password:
        fail("--state-url holds a password: the schedule would write it into its job",
             "drop it from the URL and name it in the inventory's [state] table: "
             'password = "env:VAR" (or keyring:, file:)')


def systemd_units(inventory: Path, state_dir: Path | None, env_file: Path | None, *,
                  state_url: str | None = None) -> dict[str, str]:
    """The service and timer files, by file name."""
    status = shlex.join(_command(inventory, state_dir, "status", "--notify", state_url=state_url))
    renew = shlex.join(_command(inventory, state_dir, "renew", state_url=state_url))
    environment = f"EnvironmentFile={env_file.resolve()}\n" if env_file else ""
    service = (
        "[Unit]\n"
        "Description=certfleet: renew and deploy the estate's certificates\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=oneshot\n"
        f"WorkingDirectory={inventory.resolve().parent}\n"
        f"{environment}"
        f"ExecStart=-{status}\n"
        f"ExecStart={renew}\n"
    )
    timer = (
        "[Unit]\nDescription=certfleet renew, twice a day\n\n"
        "[Timer]\nOnCalendar=*-*-* 00,12:00:00\nRandomizedDelaySec=43200\nPersistent=true\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{UNIT}.service": service, f"{UNIT}.timer": timer}


def cron_line(inventory: Path, state_dir: Path | None, env_file: Path | None,
              minute: int | None = None, *, state_url: str | None = None) -> str:
    """One crontab line: twice a day at a minute chosen once, at random."""
    minute = random.randrange(60) if minute is None else minute
    hour = random.randrange(12)
    status = shlex.join(_command(inventory, state_dir, "status", "--notify", state_url=state_url))
    renew = shlex.join(_command(inventory, state_dir, "renew", state_url=state_url))
    load = f"set -a; . {shlex.quote(str(env_file.resolve()))}; set +a; " if env_file else ""
    return (f"{minute} {hour},{hour + 12} * * * cd {shlex.quote(str(inventory.resolve().parent))}"
            f" && {load}{status} >/dev/null 2>&1; {renew} # {UNIT}")


def windows_command(inventory: Path, state_dir: Path | None, *,
                    state_url: str | None = None) -> list[str]:
    """The schtasks command that registers a task every 12 hours."""
    renew = subprocess.list2cmdline(_command(inventory, state_dir, "renew", state_url=state_url))
    start = f"{random.randrange(24):02d}:{random.randrange(60):02d}"
    return ["schtasks", "/Create", "/TN", UNIT, "/SC", "HOURLY", "/MO", "12", "/ST", start,
            "/TR", renew, "/F"]


def read_env_file(path: Path) -> dict[str, str]:
    """The ``VAR=value`` lines of an env file (``export VAR=value`` too; ``#`` comments),
    as systemd's EnvironmentFile and ``sh``'s ``.`` read them. Raises OSError."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if sep and name.strip().isidentifier():
            values[name.strip()] = value.strip().strip("'\"")
    return values


def check_secrets(kind: str, inventory_text: str, env_file: Path | None) -> None:
    """Refuse (exit 2) a schedule whose runs would find none of the inventory's secrets."""
    from ..secrets import env_references

    names = env_references(inventory_text)
    if kind == "windows":
        if names:
            err_console.print(
                "note: the task finds the inventory's env: secrets only in the environment of "
                f"the account it runs as: set {', '.join(names)} there (setx), or move them to "
                "the keyring (keyring:SERVICE/USER)", markup=False, highlight=False,
                soft_wrap=True)
        return
    if env_file is None:
        if names:
            fail(f"the inventory references env: secrets the scheduled runs would not have: "
                 f"{', '.join(names)}",
                 "pass --env-file FILE with a VAR=value line for each (chmod 600 FILE), or "
                 "move them to the keyring (keyring:SERVICE/USER)")
        return
    if not env_file.is_file():
        fail(f"--env-file {str(env_file)!r} does not exist",
             f"create it with a VAR=value line for each of: {', '.join(names) or '(none)'}; "
             "then chmod 600 it")
    if os.name == "posix" and env_file.stat().st_mode & 0o004:
        fail(f"--env-file {str(env_file)!r} is readable by others: it holds the secrets",
             f"run: chmod 600 {shlex.quote(str(env_file))}")
    try:
        defined = read_env_file(env_file)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--env-file {str(env_file)!r} cannot be read: {exc}",
             "give a readable text file of VAR=value lines")
    missing = [name for name in names if name not in defined]
    if missing:
        fail(f"--env-file {str(env_file)!r} does not define {', '.join(missing)}, which the "
             "inventory references", f"add a line {missing[0]}=... for each to the file")


def trial_command(kind: str, inventory: Path, state_dir: Path | None,
                 env_file: Path | None, *, state_url: str | None = None) -> str:
    """The one command that runs the job as the scheduler will: in its environment, a dry
    run (systemd, cron), or the registered task itself (windows: a real run)."""
    renew = _command(inventory, state_dir, "renew", "--dry-run", state_url=state_url)
    folder = str(inventory.resolve().parent)
    if kind == "systemd":
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        argv = ["systemd-run", *([] if root else ["--user"]), "--wait", "--pipe",
                "--collect", "-p", f"WorkingDirectory={folder}"]
        if env_file is not None:
            argv += ["-p", f"EnvironmentFile={env_file.resolve()}"]
        return shlex.join([*argv, *renew])
    if kind == "cron":
        load = (f"set -a; . {shlex.quote(str(env_file.resolve()))}; set +a; "
                if env_file else "")
        script = f"cd {shlex.quote(folder)} && {load}{shlex.join(renew)}"
        return shlex.join(["env", "-i", "HOME=" + str(Path.home()), "PATH=/usr/bin:/bin",
                           "SHELL=/bin/sh", "/bin/sh", "-c", script])
    return f"schtasks /Run /TN {UNIT}"


def _install_systemd(units: dict[str, str]) -> str:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        fail("systemctl not found: this system does not run systemd",
             "use 'certfleet schedule cron --install' instead")
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    folder = Path("/etc/systemd/system") if root else Path.home() / ".config/systemd/user"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text, encoding="utf-8")
    scope = [] if root else ["--user"]
    for args in (["daemon-reload"], ["enable", "--now", f"{UNIT}.timer"]):
        result = subprocess.run([systemctl, *scope, *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            fail(f"systemctl {' '.join(args)} failed: {result.stderr.strip()[:300]}",
                 f"the units are in {folder}; run 'systemctl {' '.join(scope + args)}' by hand")
    return f"installed {UNIT}.service and {UNIT}.timer in {folder} and enabled the timer"


def _install_cron(line: str) -> str:
    crontab = shutil.which("crontab")
    if crontab is None:
        fail("crontab not found", "install cron, or use 'certfleet schedule systemd --install'")
    current = subprocess.run([crontab, "-l"], capture_output=True, text=True, check=False)
    lines = [x for x in current.stdout.splitlines() if not x.endswith(f"# {UNIT}")]
    lines.append(line)
    result = subprocess.run([crontab, "-"], input="\n".join(lines) + "\n", capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        fail(f"crontab refused the line: {result.stderr.strip()[:300]}",
             "add the line printed by 'certfleet schedule cron' with 'crontab -e'")
    return "installed the crontab line (an earlier certfleet line was replaced)"


def register(app: typer.Typer) -> None:
    @app.command("schedule")
    @handle_errors
    def schedule_command(
        kind: str = typer.Argument(..., help="systemd, cron or windows."),
        install: bool = typer.Option(False, "--install", help="Install it where possible."),
        env_file: Path | None = ENV_FILE_OPTION,
        inventory: Path = INVENTORY_OPTION,
        state_dir: Path | None = STATE_OPTION,
        state_url: str | None = STATE_URL_OPTION,
    ) -> None:
        """Print (or --install) a schedule that runs 'certfleet renew' twice a day."""
        if kind not in KINDS:
            fail(f"unknown schedule kind {kind!r}", "use systemd, cron or windows")
        if not inventory.exists():
            fail(f"inventory {str(inventory)!r} does not exist",
                 "pass --inventory FILE (the schedule runs with its absolute path)")
        from ..inventory import load_inventory

        check_state_url(state_url)
        check_secrets(kind, load_inventory(inventory).text, env_file)
        tip = trial_command(kind, inventory, state_dir, env_file, state_url=state_url)

        def print_test() -> None:
            what = "the task itself, a real run" if kind == "windows" else "a dry run"
            err_console.print(f"test it as the scheduler runs it ({what}): {tip}",
                              markup=False, highlight=False, soft_wrap=True)
        if kind == "systemd":
            units = systemd_units(inventory, state_dir, env_file, state_url=state_url)
            if install:
                console.print(_install_systemd(units), markup=False)
                print_test()
                return
            for name, text in units.items():
                typer.echo(f"# {name}\n{text}")
            typer.echo(f"# install: copy both to /etc/systemd/system, then "
                       f"systemctl enable --now {UNIT}.timer")
            print_test()
        elif kind == "cron":
            line = cron_line(inventory, state_dir, env_file, state_url=state_url)
            if install:
                console.print(_install_cron(line), markup=False)
                print_test()
                return
            typer.echo(line)
            print_test()
        else:
            argv = windows_command(inventory, state_dir, state_url=state_url)
            if install:
                if os.name != "nt":
                    fail("the Windows Task Scheduler exists only on Windows",
                         "run 'certfleet schedule windows --install' on the Windows host")
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    fail(f"schtasks failed: {result.stderr.strip()[:300]}",
                         "run the printed command in an elevated prompt")
                console.print(f"registered the scheduled task {UNIT}", markup=False)
                print_test()
                return
            typer.echo(subprocess.list2cmdline(argv))
            print_test()
