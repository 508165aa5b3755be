"""The EmsServerManager dialogue: walk the menus by label to the import, answer it, back out.

A :class:`EmsDialogue` drives one root shell's :class:`~.terminal.Screen`:
``run_import`` types the menu command, picks each entry of the menu path by
its label, answers "Press Enter" and confirmations, types the keystore
password at the password prompt (and only there), reads OVOC's verdict, and
leaves the menus. ``in_menu`` says whether the shell may still be inside a
menu (after a timeout), ``hung_up`` whether OVOC closed the session after its
verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import DeviceConnectionError, DeviceRefusedError, DeviceTimeoutError
from .config import Timeouts
from .menu import (
    MenuStep,
    OvocMenu,
    answer_for,
    back_option,
    import_verdict,
    match_option,
    menu_options,
)
from .terminal import Screen, classify, last_line

__all__ = ["EmsDialogue", "WalkStep"]

#: How loosely an entry matched (see :func:`~.menu.match_option`): up to this tier the
#: label matched; above, only the fallback number or a shorter entry did.
LABEL_TIERS = 4


@dataclass(frozen=True)
class WalkStep:
    """One step of the menu path as walked: the setting, the key typed (or that would
    be), the entry's text on the screen, and how loosely it matched (0 exact)."""

    index: int
    step: MenuStep
    key: str
    shown: str
    tier: int

    @property
    def by_label(self) -> bool:
        return self.tier <= LABEL_TIERS


class EmsDialogue:
    """One walk of EmsServerManager on ``screen`` (a root shell whose prompt is
    ``root_prompt``)."""

    def __init__(self, screen: Screen, menu: OvocMenu, root_prompt: str | None,
                 timeouts: Timeouts, device: str, keystore_password: str | None) -> None:
        self.screen = screen
        self.menu = menu
        self.root_prompt = root_prompt
        self.timeouts = timeouts
        self.device = device
        self.keystore_password = keystore_password
        self.in_menu = False  # the shell may be inside a menu (after an error)
        self.menu_from = len(screen.text)
        self.import_text = ""  # what the last import printed after the password
        self.keystore_refused = False  # OVOC kept asking for the keystore password
        self.hung_up = False  # OVOC closed the session after its verdict

    def classify(self, window: str, *, loose_menu: bool = False,
                 menu_window: str | None = None) -> tuple[str, str] | None:
        """See :func:`~.terminal.classify`, with this shell's prompt."""
        return classify(window, self.menu, self.root_prompt, loose_menu=loose_menu,
                        menu_window=menu_window)

    async def walk(self, *, select_last: bool = True) -> list[WalkStep]:
        """Start the menu command and pick each entry of the menu path by its label.

        With ``select_last=False`` (a probe) the last entry, the import, is found but
        not selected: the walk stops on its menu. Returns what was matched at each
        step. Raises DeviceRefusedError (with ``step`` = the index of the step not
        found and ``options`` = the entries shown) when an entry is not on the screen.
        """
        screen = self.screen
        menu = self.menu
        self.in_menu = True
        self.menu_from = len(screen.text)
        screen.send(menu.command)
        walked: list[WalkStep] = []
        index = 0
        while index < len(menu.path):
            step = menu.path[index]
            while True:
                kind, line = await screen.settle(
                    self.walking, ["menu", "continue", "confirm", "shell"],
                    self.timeouts.prompt, f"menu with {step.label!r}", stuck=self.timeouts.prompt)
                if kind == "menu":
                    break
                if kind == "shell":
                    self.in_menu = False
                    raise DeviceRefusedError(
                        f"{menu.command} ended without showing {step.label!r}",
                        hint="check that the menu command runs as this user on the device",
                        device=self.device, screen="\n".join(screen.last_lines(20)))
                screen.send(answer_for(self.menu, kind, line))
            window = screen.text[self.menu_from:]
            # The entry for this step, or, matched by its label at least as well, one of a
            # later step: a menu that opens deeper (straight in Security) is walked from there.
            found = [(hit[0], j, hit[1]) for j in range(index, len(menu.path))
                     if (hit := match_option(window, menu.path[j], fallbacks=j == index))]
            key = None
            if found:
                tier, index, key = min(found)
            if key is None:
                raise DeviceRefusedError(
                    f"EmsServerManager shows no entry {step.label!r}"
                    + (f" nor {step.number!r}" if step.number else ""),
                    hint="set the menu labels (or numbers) of this firmware with --menu FILE "
                    "(inventory: labels and numbers of the device's menu table)",
                    device=self.device, screen="\n".join(screen.last_lines(20)),
                    step=index, options=menu_options(window),
                )
            shown = dict(menu_options(window)).get(key, "")
            walked.append(WalkStep(index, menu.path[index], key, shown, tier))
            if index == len(menu.path) - 1 and not select_last:
                return walked
            screen.send(key)
            self.menu_from = screen.mark
            index += 1
        return walked

    async def run_import(self) -> tuple[bool, str]:
        """Walk the menu to the import, answer it, and return (ok, OVOC's verdict line)."""
        await self.walk()
        screen = self.screen
        verdict_from = screen.mark
        passwords = 0

        def importing(window: str) -> tuple[str, str] | None:
            state = self.classify(window)
            if passwords and (state is None or state[0] == "unknown?") \
                    and import_verdict(self.menu, screen.text[verdict_from:], known_only=True)[1]:
                # OVOC said how it went and is busy (a silent restart) or waits unasked
                return "verdict?", last_line(window)
            return state

        while True:
            timeout = self.timeouts.import_ if passwords else self.timeouts.prompt
            try:
                kind, line = await screen.settle(
                    importing, ["menu", "continue", "confirm", "password", "shell", "verdict"],
                    timeout, "import result" if passwords
                    else "'Press Enter to continue' or password prompt",
                    stuck=self.timeouts.prompt)
            except DeviceConnectionError:
                if not import_verdict(self.menu, screen.text[verdict_from:], known_only=True)[1]:
                    raise
                kind = "hung up"  # after its verdict: the verdict stands
            if kind in ("menu", "shell", "verdict", "hung up"):
                break
            if kind == "password":
                if passwords == 0:
                    verdict_from = screen.mark
                passwords += 1
                if passwords > 3:
                    self.keystore_refused = True
                    raise DeviceRefusedError(
                        "OVOC keeps asking for the keystore password",
                        hint="check the keystore password (6+ characters; "
                        "--keystore-password-env, inventory: keystore_password) and the menu's "
                        "password_prompt setting (--menu FILE; inventory: the device's menu "
                        "table)", device=self.device,
                        screen="\n".join(screen.last_lines(20)))
                screen.send(self.keystore_password or "")
            else:
                screen.send(answer_for(self.menu, kind, line))
        self.import_text = screen.text[verdict_from:]
        ok, verdict = import_verdict(self.menu, self.import_text)
        if kind == "hung up":
            self.hung_up = True  # the driver reopens the session when needed (restore)
            return ok, verdict
        if kind == "shell":
            self.in_menu = False
            self.menu_from = len(screen.text)
            return ok, verdict
        try:
            await self.leave_menu()
        except (DeviceTimeoutError, DeviceConnectionError):
            # OVOC gave its verdict; a menu that will not let go does not change it
            # (the session is reopened before it is used again).
            self.in_menu = True
        return ok, verdict

    def walking(self, window: str) -> tuple[str, str] | None:
        screen = self.screen
        return self.classify(window, loose_menu=True,
                              menu_window=screen.text[self.menu_from:])

    async def leave_menu(self) -> None:
        """Answer 'Press Enter' and back out of every menu until the shell prompt."""
        screen = self.screen
        self.menu_from = screen.mark
        # A menu that shows no way back: try the usual keys, keeping the one that worked.
        guesses = list(dict.fromkeys([self.menu.back, "q", "0", "x"]))
        guess, guessed_at = 0, None
        for _ in range(16):
            kind, line = await screen.settle(
                self.walking, ["menu", "continue", "confirm", "shell"], self.timeouts.prompt,
                "menu or shell prompt", stuck=self.timeouts.prompt)
            if kind == "shell":
                self.in_menu = False
                self.menu_from = len(screen.text)
                return
            if kind == "menu":
                window = screen.text[self.menu_from:]
                key = back_option(window, self.menu.back_labels)
                if key is None:
                    options = menu_options(window)
                    if guessed_at is not None and options[-len(guessed_at):] == guessed_at:
                        guess += 1  # the same menu again: that key did not work
                    guessed_at = options
                    key = guesses[guess % len(guesses)]
                screen.send(key)
                self.menu_from = screen.mark
            else:
                screen.send(answer_for(self.menu, kind, line))
        raise DeviceTimeoutError("EmsServerManager did not return to the shell",
                                 hint="check the menu's back setting (--menu FILE; inventory: "
                                 "back of the device's menu table)", device=self.device)
