"""The OVOC package's pure parts, without SSH: menu matching, settings, progress, names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from certfleet.drivers.ovoc import (
    MenuStep,
    OvocDriver,
    OvocMenu,
    OvocProgress,
    SshLogin,
    StagingSettings,
    SuSettings,
    Timeouts,
)
from certfleet.drivers.ovoc.menu import (
    answer_for,
    back_option,
    import_verdict,
    keystore_refused,
    match_option,
)
from certfleet.drivers.ovoc.terminal import classify
from certfleet.errors import ConfigError
from certfleet.lab.ems_emulator import KEYTOOL_PASSWORD_ERROR

SECURITY = "\n".join([
    "  10. Server Certificate Status", "  11. Server Certificate Updates",
    "  12. HTTPS Cipher Settings", "   q. Back", "Choose an option: "])


def test_match_option_tiers() -> None:
    """Exact label first, then looser forms, the number only as a fallback."""
    assert match_option(SECURITY, MenuStep("Server Certificate Updates")) == (0, "11")
    assert match_option(SECURITY, MenuStep("Server Certificates Update")) == (3, "11")
    assert match_option(SECURITY, MenuStep("TLS Certificates", "12")) == (5, "12")
    assert match_option(SECURITY, MenuStep("TLS Certificates", "12"), fallbacks=False) is None
    assert back_option(SECURITY, OvocMenu().back_labels) == "q"


def test_verdicts_answers_and_keystore_refusals() -> None:
    """OVOC's words decide the verdict; keytool's refusal is recognised as a password one."""
    menu = OvocMenu()
    assert import_verdict(menu, "PKCS#12 file and JKS Keystore generated successfully\n")[0]
    failed = f"{KEYTOOL_PASSWORD_ERROR}\nError: failed to generate SEM PKCS#12 file\n"
    assert import_verdict(menu, failed) == (False, KEYTOOL_PASSWORD_ERROR)
    assert keystore_refused(menu, failed)
    assert keystore_refused(menu, "Error: the keystore password must be at least 6 characters")
    assert not keystore_refused(menu, "Error: failed to generate SEM PKCS#12 file\n"
                                      "server.key does not match server.crt")
    assert answer_for(menu, "confirm", "Overwrite? (yes/no)") == "yes"
    assert answer_for(menu, "continue", "Press Enter to continue") == ""


def test_classify_is_pure() -> None:
    """What a quiet screen asks, from its text, the menu settings and root's prompt."""
    menu = OvocMenu()
    assert classify(SECURITY, menu, "[root@ovoc ~]# ") == ("menu", "Choose an option:")
    assert classify("done\n[root@ovoc ~]# ", menu, "[root@ovoc ~]# ")[0] == "shell"  # type: ignore[index]
    assert classify("Enter the password for the keystore: ", menu, None) == (
        "password", "Enter the password for the keystore:")


def test_menu_settings_from_mapping_are_checked() -> None:
    """An unknown key, unpaired numbers or a bad pattern are one ConfigError each."""
    menu = OvocMenu.from_mapping({"labels": ["Security", "TLS"], "numbers": ["4", ""],
                                  "keystore-failure": r"kennwort falsch"})
    assert menu.path == (MenuStep("Security", "4"), MenuStep("TLS"))
    assert menu.keystore_failure == "kennwort falsch"
    for bad in ({"colour": "red"}, {"labels": ["a"], "numbers": ["1", "2"]},
                {"failure": "("}):
        with pytest.raises(ConfigError):
            OvocMenu.from_mapping(bad)


def test_settings_objects_and_flat_keywords_agree() -> None:
    """The frozen settings objects, and the flat keywords that override their fields."""
    driver = OvocDriver("x", "192.0.2.1", login=SshLogin(port=2222, user="ems"),
                        su=SuSettings(password="pw"), timeouts=Timeouts(prompt=7),
                        staging=StagingSettings(dir="/srv/certs/"))
    assert (driver.login.port, driver.login.user, driver.su.user) == (2222, "ems", "root")
    assert driver.staging_dir == "/srv/certs" and driver.timeouts.prompt == 7
    flat = OvocDriver("x", "192.0.2.1", ssh_port=2200, su_user="emsroot", prompt_timeout=3,
                      known_hosts="kh", verify_timeout=9, login=SshLogin(user="ems"))
    assert (flat.login.port, flat.login.user, flat.su_user) == (2200, "ems", "emsroot")
    assert flat.login.known_hosts == Path("kh") and flat.verify_timeout == 9
    with pytest.raises(TypeError, match="sftp_port"):
        OvocDriver("x", "192.0.2.1", sftp_port=22)
    with pytest.raises(ConfigError):
        StagingSettings(dir="server_certs")
    with pytest.raises(ConfigError):
        SuSettings(prompt="(")
    assert "pw" not in repr(SuSettings(password="pw"))


def test_progress_only_moves_forward() -> None:
    """The driver's progress is one ordered state: a later step is never undone."""
    driver = OvocDriver("x", "192.0.2.1")
    assert driver.progress is OvocProgress.NEW
    driver._advance(OvocProgress.IMPORTED)
    driver._advance(OvocProgress.STAGED)
    assert driver.progress is OvocProgress.IMPORTED
    driver.assume_changed()
    assert driver.progress is OvocProgress.IMPORTED


@pytest.mark.parametrize("name", ["server.crt", "ca12.crt", "notes.txt", "Zertifikat ü.pem",
                                  "a" * 128])
def test_safe_staged_names(name: str) -> None:
    from certfleet.drivers.ovoc.staging import safe_staged_name

    assert safe_staged_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "../x", "a/b", "a\\b", "c:x",
                                  "nul", "COM1.txt", "a\x1b[31mb", "tab\there", " pad",
                                  "a" * 129, "\u00fc" * 65])
def test_unsafe_staged_names(name: str) -> None:
    """Separators, a leading dot, control characters, device names, too long: refused."""
    from certfleet.drivers.ovoc.staging import safe_staged_name

    assert not safe_staged_name(name)


def test_screen_buffer_is_bounded() -> None:
    """A device that keeps drawing is cut off with a clear error, not read forever."""
    from certfleet.drivers.ovoc.terminal import Screen
    from certfleet.errors import DeviceConnectionError

    screen = Screen(None, [], max_chars=100)  # type: ignore[arg-type]  # no process needed
    screen.feed("x" * 60)
    with pytest.raises(DeviceConnectionError, match="more than 100 characters"):
        screen.feed("y" * 60)


def test_a_cancellation_that_comes_with_output_is_not_lost() -> None:
    """Ctrl-C (a task cancellation) in the very loop iteration that brings the menu's
    output: the screen reader ends with CancelledError, it does not read on. On Python
    3.11, asyncio.wait_for returned the output and dropped the cancellation."""
    from certfleet.drivers.ovoc.terminal import Screen

    class Stdout:
        waiter: asyncio.Future[str] | None = None

        async def read(self, size: int) -> str:
            self.waiter = asyncio.get_running_loop().create_future()
            return await self.waiter

    class Process:  # the two attributes Screen uses of an SSH process
        stdout = Stdout()
        stdin = None

    async def main() -> None:
        process = Process()
        screen = Screen(process, [])  # type: ignore[arg-type]
        task = asyncio.create_task(
            screen.settle(lambda window: None, ["menu"], timeout=5, waiting_for="the menu"))
        while process.stdout.waiter is None:
            await asyncio.sleep(0)
        process.stdout.waiter.set_result("Choose an option: ")
        asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "Choose an option" in screen.text  # the output arrived; the cancel held

    asyncio.run(main())
