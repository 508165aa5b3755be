"""The OVOC driver against a second, independently written OVOC emulation.

Each :class:`Variant` makes other choices where the story is silent (prompts,
banners, colours, menu layouts, pagers, confirmations, password prompts,
verdict wording); the driver must deploy, refuse and roll back on all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from _alt_ovoc import AltOvoc, Variant
from certfleet.drivers.base import Backup, DeployOutcome
from certfleet.drivers.ovoc import OvocDriver, OvocMenu, _Screen, menu_options
from certfleet.drivers.tlsprobe import Listener
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.checks import check_bundle
from certfleet.pki.model import Bundle
from ovoc_support import ovoc_bundle as bundle_of

KEYSTORE = "Keystore-Alt-Pa55"

BANNER = (
    "##############################################################\n"
    "#  AudioCodes One Voice Operations Center                    #\n"
    "#  Authorised use only. Sessions are logged; misuse costs $$ #\n"
    "##############################################################\n"
    "Last login: Thu Nov 26 09:12:44 2026 from 10.1.2.3\n"
    "Price list: $\n"
)

VARIANTS = [
    Variant(name="story-defaults"),
    Variant(
        name="colour-clear-parenthesis",
        shell_prompt="acems@OVOC:~$ ", root_prompt="[root@ovoc {n}]# ", colour=True, clear=True,
        option="{key}) {label}", security=("6", "Security Menu"),
        choice_prompt="Enter your choice [1-15]: ", exit_option=("0", "Exit"),
        back_option=("0", "Back"), su_prompt="Password:",
        passwords=("Password used in certificate utility:", "Re-enter password:"),
        failure=("Error: SEM PKCS#12 file generation failed",),
    ),
    Variant(
        name="bare-lf-banner-dash",
        shell_prompt="$ ", root_prompt="[root@ovoc acems]# ", banner=BANNER, crlf=False,
        option=" {key} - {label}", security=("9", "Security Settings"),
        choice_prompt="Please select:", exit_option=("x", "Exit"),
        back_option=("x", "Back to main menu"), start_pager="Press any key to continue",
        confirm="Are you sure? (y/n) ", su_prompt="password for root: ",
        su_failure="su: incorrect password",
        passwords=("Please enter the keystore password: ", "Confirm password: "),
        failure=("ERROR: keytool could not generate SEM PKCS#12 file",),
        restart=("Restarting Apache...",), restart_delay=0.5, posix_rename=False,
    ),
    Variant(
        name="line-editor-brackets-more",
        shell_prompt="bash-4.2$ ", root_prompt="bash-4.2# ", line_editor=True,
        option="[{key}] {label}", security=("12", "Security"), certificates_key="21",
        import_key="7", choice_prompt="> ", menu_pager="-- More --", confirm_exit=True,
        continue_prompt="Press [Enter] to continue...", exit_after_import=True,
        restart=("Restarting OVOC services, please wait...",),
    ),
    Variant(
        name="clear-colour-check-first",
        banner="Welcome to OVOC #1\n", clear=True, colour=True, option="({key}) {label}",
        menu_pager="Press any key to continue", pager_after=99, check_before_password=True,
        confirm="Overwrite the existing keystore? (yes/no) ",
        continue_prompt="Hit Enter to continue:",
        passwords=("Enter password: ", "Confirm password: "),
    ),
    Variant(
        name="root-hash-only", root_prompt="# ", shell_prompt="$ ", su_prompt="Password: ",
        banner="# Managed by AudioCodes #\n$ quota: 1G\n", option="{key}) {label}",
        passwords=("Password used in DigiCert Utility\n> ",),
    ),
    Variant(name="opens-in-security", start_in_security=True, back_option=("q", "Quit"),
            option="{key}) {label}"),
    Variant(name="root-prompt-without-hash", root_prompt="root@ovoc:~$ ",
            choice_prompt="Select an option [1-15] ", su_forms=("su",)),
    Variant(
        name="hidden-back-bare-prompt",
        option="{key}: {label}", choice_prompt="Your choice ", exit_option=("0", "Exit"),
        back_option=("0", "Back"), show_back=False, su_prompt="Password:",
        success=("PKCS#12 file and JKS Keystore generated successfully.",),
        sftp_home_root=True, setstat=False,
    ),
]


@pytest.fixture(scope="module")
def ca() -> LabCA:
    return LabCA("Alt OVOC Test", key_type="ec-p256")


@pytest.fixture(scope="module")
def initial(ca: LabCA) -> Issued:
    return ca.issue(["ovoc.example.net"], key_type="ec-p256")


@pytest.fixture(scope="module")
def new_cert(ca: LabCA) -> Issued:
    return ca.issue(["ovoc.example.net"], key_type="rsa2048")


@pytest.fixture
def appliance(request: pytest.FixtureRequest, initial: Issued) -> Iterator[AltOvoc]:
    variant = getattr(request, "param", Variant())
    with AltOvoc(variant, initial) as running:
        yield running


def make_driver(appliance: AltOvoc, **overrides: Any) -> OvocDriver:
    options: dict[str, Any] = dict(
        ssh_port=appliance.ssh_port, password=appliance.acems_password,
        su_password=appliance.root_password, keystore_password=KEYSTORE,
        host_key=appliance.fingerprint, listeners=[Listener("127.0.0.1", appliance.https.port)],
        prompt_timeout=5, import_timeout=5, verify_timeout=5, settle_time=0.1,
    )
    options.update(overrides)
    return OvocDriver("ovoc-alt", "127.0.0.1", **options)


def deploy(driver: OvocDriver, bundle: Bundle, *, force: bool = False) -> DeployOutcome:
    return asyncio.run(driver.deploy(bundle, check_bundle(bundle), force=force))


def assert_secrets_kept(outcome: DeployOutcome, appliance: AltOvoc) -> None:
    secrets = (appliance.acems_password, appliance.root_password, KEYSTORE)
    typed = [*appliance.record.commands, *appliance.record.answers]
    for secret in secrets:
        assert secret not in (outcome.transcript or "")
        assert not any(secret in line for line in typed), typed


@pytest.mark.parametrize("appliance", VARIANTS, ids=[v.name for v in VARIANTS], indirect=True)
def test_deploy_on_every_variant(appliance: AltOvoc, new_cert: Issued) -> None:
    """Each variant: the files staged, the password typed at its prompt(s) only, cert served."""
    outcome = deploy(make_driver(appliance), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message
    assert appliance.served() == new_cert.leaf
    assert appliance.record.imports == [True]
    assert appliance.record.passwords == [KEYSTORE] * len(appliance.variant.passwords)
    staged = appliance.staged()
    assert sorted(staged) == ["ca1.crt", "root.crt", "server.crt", "server.key"]
    assert staged["server.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert_secrets_kept(outcome, appliance)
    if not appliance.variant.exit_after_import:  # the menu was left by its own exit key
        exit_key = appliance.variant.back_option[0] if appliance.variant.start_in_security \
            else appliance.variant.exit_option[0]
        assert exit_key in appliance.record.answers


FAILURES = [
    Variant(name="failed-to-generate", failure=("Failed to generate SEM PKCS#12 file",)),
    Variant(name="error-generation-failed", colour=True,
            failure=("Error: SEM PKCS#12 file generation failed",)),
    Variant(name="error-could-not", check_before_password=True, option="{key}) {label}",
            failure=("ERROR ... could not generate SEM PKCS#12 file",)),
]


@pytest.mark.parametrize("appliance", FAILURES, ids=[v.name for v in FAILURES], indirect=True)
def test_refusal_is_read_and_rolled_back(appliance: AltOvoc, new_cert: Issued) -> None:
    """OVOC's 'SEM PKCS#12 file' failure, however worded, is a refusal: previous files back."""
    before = appliance.staged()
    outcome = deploy(make_driver(appliance), bundle_of(new_cert, key=False), force=True)
    assert outcome.outcome == "restored", outcome.message
    assert appliance.variant.failure[0] in outcome.message
    assert "server.key does not belong to server.crt" in outcome.message  # the old key, kept
    assert appliance.staged() == before
    assert appliance.served() == appliance.initial.leaf
    assert appliance.record.imports == [False, True]
    assert_secrets_kept(outcome, appliance)


SU_REFUSALS = [
    Variant(name="authentication-failure"),
    Variant(name="incorrect-password", su_prompt="Password:", su_failure="su: incorrect password",
            shell_prompt="$ "),
    Variant(name="asks-again", su_retry=True, su_failure="su: 3 incorrect password attempts"),
]


@pytest.mark.parametrize("appliance", SU_REFUSALS, ids=[v.name for v in SU_REFUSALS],
                         indirect=True)
def test_su_refusal_wordings(appliance: AltOvoc, new_cert: Issued) -> None:
    """A wrong root password is refused before anything is staged, whatever su prints."""
    before = appliance.staged()
    outcome = deploy(make_driver(appliance, su_password="not-root-pw"), bundle_of(new_cert))
    assert outcome.outcome == "refused", outcome.message
    assert "su to 'root'" in outcome.message
    assert appliance.staged() == before
    assert not any("EmsServerManager" in c for c in appliance.record.commands)


def test_enter_as_carriage_return(initial: Issued, new_cert: Issued) -> None:
    """A terminal that takes only CR as Enter (as PuTTY sends it) works with newline='\\r'."""
    with AltOvoc(Variant(name="cr-only", enter_keys="\r"), initial) as appliance:
        outcome = deploy(make_driver(appliance, newline="\r"), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message
        assert appliance.record.passwords == [KEYSTORE]


def test_sftp_without_setstat(initial: Issued, new_cert: Issued) -> None:
    """An SFTP server that cannot change modes: a world-writable folder is left, deploy works."""
    with AltOvoc(Variant(name="no-setstat", setstat=False), initial) as appliance:
        appliance.staging.chmod(0o777)
        outcome = deploy(make_driver(appliance), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message
        assert appliance.staged()["server.crt"] == new_cert.leaf_pem


def test_silent_wait_after_the_verdict(initial: Issued, new_cert: Issued) -> None:
    """OVOC that waits for a key with no prompt after its verdict: the verdict still counts."""
    variant = Variant(name="silent", silent_after_verdict=True)
    with AltOvoc(variant, initial) as appliance:
        # The silence after the verdict is waited out for one prompt timeout: short
        # enough to keep the test quick, yet 5 s for each screen on loopback.
        outcome = deploy(make_driver(appliance, prompt_timeout=5), bundle_of(new_cert))
        assert outcome.outcome == "installed", outcome.message
        assert appliance.served() == new_cert.leaf
        assert appliance.record.imports == [True]


@pytest.mark.parametrize("key", [True, False], ids=["accepted", "refused"])
def test_hang_up_after_the_verdict(initial: Issued, new_cert: Issued, key: bool) -> None:
    """OVOC that drops the session after its verdict: the verdict counts (and rollback works)."""
    with AltOvoc(Variant(name="hangup", hangup_after_verdict=True), initial) as appliance:
        outcome = deploy(make_driver(appliance), bundle_of(new_cert, key=key), force=not key)
        assert outcome.outcome == ("installed" if key else "restored"), outcome.message
        assert appliance.served() == (new_cert.leaf if key else initial.leaf)
        if not key:
            assert "Failed to generate SEM PKCS#12 file" in outcome.message


UNKNOWN = [Variant(name="unknown-question", unknown_question="Enter the keystore alias: ")]


@pytest.mark.parametrize("appliance", UNKNOWN, ids=["unknown"], indirect=True)
def test_unknown_screen_times_out_with_last_screen(appliance: AltOvoc, new_cert: Issued) -> None:
    """An unknown question is not answered: a timeout naming it, then the old cert is back."""
    outcome = deploy(make_driver(appliance, prompt_timeout=1), bundle_of(new_cert))
    assert outcome.outcome == "restored", outcome.message
    assert "last screen" in outcome.message
    assert "Enter the keystore alias:" in outcome.message
    assert KEYSTORE not in appliance.record.answers
    assert appliance.served() == appliance.initial.leaf


RELABELLED = [Variant(name="administration", security=("5", "Administration"))]


@pytest.mark.parametrize("appliance", RELABELLED, ids=["relabelled"], indirect=True)
def test_labels_from_configuration(appliance: AltOvoc, new_cert: Issued) -> None:
    """A firmware whose main entry is worded otherwise is walked with configured labels."""
    menu = OvocMenu.from_mapping({"labels": ["Administration", "Server Certificate Updates",
                                             "Import Server Certificates from Certificate "
                                             "Authority (CA)"]})
    outcome = deploy(make_driver(appliance, menu=menu), bundle_of(new_cert))
    assert outcome.outcome == "installed", outcome.message


def test_assume_changed_restores_an_earlier_backup(initial: Issued, new_cert: Issued) -> None:
    """assume_changed() lets a new session put back a backup taken by an earlier run."""
    with AltOvoc(Variant(), initial) as appliance:
        outcome = deploy(make_driver(appliance), bundle_of(new_cert))
        assert outcome.outcome == "installed" and outcome.backup is not None
        backup = Backup.read_from(outcome.backup.write_to(appliance.base / "backup"))
        driver = make_driver(appliance)

        async def rollback() -> None:
            await driver.connect()
            try:
                driver.assume_changed()
                await driver.restore(backup)
            finally:
                await driver.close()

        asyncio.run(rollback())
        assert appliance.served() == initial.leaf
        assert appliance.staged() == backup.files


# ---- the screen reader on its own ---------------------------------------------------------


@pytest.mark.parametrize("line", [
    "Enter password:", "Password used in certificate utility:", "Re-enter password:",
    "Please enter the keystore password: ", "Confirm password:",
    "Password used in DigiCert Utility",
    "Enter the password for the PKCS#12 file and JKS Keystore: ",
])
def test_password_prompts_are_recognised(line: str) -> None:
    """The keystore password prompts of every wording are recognised as such."""
    driver = OvocDriver("x", "127.0.0.1")
    assert driver._classify(f"Import\n{line}") == ("password", line.rstrip())


def test_question_above_a_bare_prompt() -> None:
    """A question on its own line with a bare '>' or ':' under it is read as one prompt."""
    driver = OvocDriver("x", "127.0.0.1")
    assert driver._classify("Import\nPassword used in DigiCert Utility\n> ") == (
        "password", "Password used in DigiCert Utility >")
    kinds = [(driver._classify(text) or ("none", ""))[0] for text in (
        "Press Enter to continue\n:", "Are you sure? (y/n)\n>", "1. Security\n2. Backup\n> ",
        "Restarting Apache...\n> ")]
    assert kinds == ["continue", "confirm", "menu", "unknown?"]


@pytest.mark.parametrize("line", [
    "Passwords do not match", "Error: password must be at least 6 characters:",
    "Restarting Apache...", "The password protects the keystore.",
    "Keystore password changed successfully:",
])
def test_password_is_never_typed_after_other_lines(line: str) -> None:
    """Lines that mention a password but do not ask for one are not password prompts."""
    driver = OvocDriver("x", "127.0.0.1")
    state = driver._classify(f"Import\n{line}")
    assert state is None or state[0] != "password"


@pytest.mark.parametrize(("line", "kind", "answer"), [
    ("Are you sure? (y/n)", "confirm", "y"), ("Overwrite? [Y/n]", "confirm", "y"),
    ("Overwrite the keystore? (yes/no) ", "confirm", "yes"),
    ("-- More --", "continue", ""), ("--More--(45%)", "continue", ""),
    ("Press any key to continue", "continue", ""), ("Press Enter to continue...", "continue", ""),
    ("Press [Enter] to continue...", "continue", ""), ("Press <ENTER> to continue", "continue", ""),
])
def test_confirmations_and_pagers(line: str, kind: str, answer: str) -> None:
    """Confirmations get 'y' ('yes' when offered yes/no); pagers and 'Press Enter' get Enter."""
    driver = OvocDriver("x", "127.0.0.1")
    state = driver._classify(line)
    assert state is not None and state[0] == kind
    assert driver._answer(kind, state[1]) == answer


def test_menu_entries_in_every_layout() -> None:
    """Entries as '11.', '11)', '11 -', '[11]', '(11)', 'q.' and two columns are all read."""
    screen = "\n".join([
        "  11. Server Certificate Updates", "11) Server Certificate Updates",
        " 11 - Server Certificate Updates", "[11] Server Certificate Updates",
        "(11) Server Certificate Updates", "  q. Quit", "0) Back", "x - Exit",
        "  1. Network        2. Date & Time", "Enter your choice [1-15]:",
    ])
    assert menu_options(screen) == [("11", "Server Certificate Updates")] * 5 + [
        ("q", "Quit"), ("0", "Back"), ("x", "Exit"), ("1", "Network"), ("2", "Date & Time")]


def test_reworded_entries_are_found_by_their_words() -> None:
    """Plural/singular, a dropped '(CA)', or a shorter entry inside the label still match."""
    from certfleet.drivers.ovoc import MenuStep, _pick_option

    step = MenuStep("Import Server Certificates from Certificate Authority (CA)")
    menu = "1. Import Server Certificates (signed from CSR)\n{}\n> "
    assert _pick_option(menu.format("7. Import Server Certificates from Certificate Authority"),
                        step) == "7"
    assert _pick_option(menu.format("8. Import from CA"), step) == "8"
    assert _pick_option(menu.format("9. Restore Defaults"), step) is None
    assert _pick_option("21) Server Certificates Update\n10) Server Certificate Status\n>",
                        MenuStep("Server Certificate Updates")) == "21"


def test_screen_strips_titles_colours_and_clears() -> None:
    """Window titles, colours, clear-screen and bare CRs never reach the screen text."""
    screen = _Screen(None, [])  # type: ignore[arg-type]  # no process needed
    for chunk in ("\x1b]0;root@ovoc:~\x07\x1b[1;31m[root@ovoc acems]#\x1b[0m ls\r\n",
                  "\x1b[H\x1b[2J\x1b[3J  \x1b[1;33m4\x1b[0m. Security\r\n", "\x1b]0;a long ",
                  "window title\x07\x1b]2;ended by ST\x1b", "\\> "):
        screen.feed(chunk)
    assert screen.text == "[root@ovoc acems]# ls\n  4. Security\n> "


def test_screen_text_does_not_depend_on_read_boundaries() -> None:
    """Whatever byte the reads are cut at, the screen text is the same."""
    data = ("\x1b]0;acems@ovoc:~\x07\x1b[1;32m$\x1b[0m su -\r\nPassword: \r\n"
            "\x1b[H\x1b[2J\x1b(B\x1b[1m  Security\x1b[0m\r\n \x1b[33m11\x1b[0m) Server Certificate"
            " Updates\r\n\x1b]2;title\x1b\\Choose an option: \x1b[K")
    whole = _Screen(None, [])  # type: ignore[arg-type]  # no process needed
    whole.feed(data)
    assert whole.text == "$ su -\nPassword: \n  Security\n 11) Server Certificate Updates\n" \
        "Choose an option: "
    for cut in range(1, len(data)):
        split = _Screen(None, [])  # type: ignore[arg-type]  # no process needed
        split.feed(data[:cut])
        split.feed(data[cut:])
        assert split.text == whole.text, cut


def test_menu_wording_is_configurable() -> None:
    """Confirmation answer, verdict texts and back labels come from the menu settings."""
    menu = OvocMenu.from_mapping({
        "confirm_answer": "j", "success": ["Zertifikat importiert"],
        "failure": r"fehlgeschlagen", "back_labels": r"^zur(ü|u)ck",
        "password_prompt": r"kennwort\s*:\s*$",
    })
    driver = OvocDriver("x", "127.0.0.1", menu=menu)
    assert driver._answer("confirm", "Sind Sie sicher? (y/n)") == "j"
    assert driver._classify("Kennwort: ") == ("password", "Kennwort:")
    assert driver._verdict("Import ...\nZertifikat importiert\n") == (True, "Zertifikat importiert")
    assert driver._verdict("SEM PKCS#12 fehlgeschlagen\n")[0] is False
    assert driver._verdict("Something else\n") == (
        False, "no known verdict; OVOC printed: Something else")
    from certfleet.drivers.ovoc import _back_option
    assert _back_option("1. Ändern\n0. Zurück\n> ", menu.back_labels) == "0"
    assert menu_options("1. Ändern\n0. Zurück\n> ")[0] == ("1", "Ändern")
