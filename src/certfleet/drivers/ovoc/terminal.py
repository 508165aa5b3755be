"""The terminal: a PTY session read as a person reads it, and what its last line asks.

:class:`Screen` drops escape sequences (colours, clear-screen, window
titles) and carriage returns, scrubs every secret, keeps the transcript,
and settles on a screen once the output has gone quiet. :func:`classify`
names what a quiet screen asks: a confirmation, a password prompt, "Press
Enter", a menu, root's shell prompt. What the device draws is kept as text,
bounded by :data:`MAX_SCREEN_CHARS`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ...errors import DeviceConnectionError, DeviceTimeoutError
from .menu import OvocMenu, menu_options

if TYPE_CHECKING:
    import asyncssh

__all__ = ["MAX_SCREEN_CHARS", "Classify", "Screen", "classify", "last_line", "prompt_shape"]

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clear screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: the window title a shell prompt sets
    r"|\x1b[()*+][A-Za-z0-9]"  # character set selection
    r"|\x1b[=>78cDEHMNOZ]"  # keypad modes, save/restore cursor, reset
)
# An escape sequence cut at the end of a read: kept until the rest arrives.
_PARTIAL_ESC = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]{0,512}\x1b?|[()*+])?\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and newline
_PROMPT_END = re.compile(r"[:?>\]$#%][ \t]*$")
_SHELL_END = re.compile(r"[$#][ \t]*$")
#: The most a session may draw (characters, after escape sequences are removed): a menu
#: walk draws a few kilobytes; a device that never stops talking is cut off here.
MAX_SCREEN_CHARS = 4_000_000

Classify = Callable[[str], "tuple[str, str] | None"]


class Screen:
    """A PTY session read as a screen: settle on prompts, type answers, keep a transcript.

    ``text`` is what the device drew, escape sequences and control characters
    removed, line ends as ``\\n`` and every secret replaced by ``********``.
    ``mark`` is where the output that follows the last answer begins. More
    than ``max_chars`` of text raises DeviceConnectionError (bounded reads).
    """

    def __init__(self, process: asyncssh.SSHClientProcess[str], secrets: list[str],
                 quiet: float = 0.3, newline: str = "\n", *,
                 max_chars: int = MAX_SCREEN_CHARS) -> None:
        self._process = process
        self.max_chars = max_chars
        self._secrets = [s for s in secrets if s]
        self._longest = max((len(s) for s in self._secrets), default=0)
        self.quiet = quiet
        self.newline = newline
        self.text = ""
        self.mark = 0
        self._pending = ""  # an escape sequence or CR cut at a read boundary

    @property
    def process(self) -> asyncssh.SSHClientProcess[str]:
        """The shell's SSH process (its channel is closed before the connection)."""
        return self._process

    def feed(self, chunk: str) -> None:
        if len(self.text) + len(self._pending) + len(chunk) > self.max_chars:
            raise DeviceConnectionError(
                f"the device drew more than {self.max_chars} characters in one session; "
                "certfleet stops reading there",
                hint="check that the login shell and EmsServerManager are not looping "
                "(the transcript shows the last screens)")
        data = self._pending + chunk
        self._pending = ""
        partial = _PARTIAL_ESC.search(data)
        if partial:
            data, self._pending = data[:partial.start()], data[partial.start():]
        if data.endswith("\r"):
            data, self._pending = data[:-1], "\r" + self._pending
        start = max(0, len(self.text) - self._longest)
        self.text += self.clean(data)
        if self._secrets:  # a secret echoed across two reads
            tail = self.text[start:]
            scrubbed = self._scrub(tail)
            if scrubbed != tail:
                self.text = self.text[:start] + scrubbed

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def clean(self, raw: str) -> str:
        text = _ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")
        return self._scrub(_CONTROL.sub("", text))

    def since_mark(self) -> str:
        return self.text[self.mark:]

    def last_lines(self, count: int = 10) -> list[str]:
        return [line for line in self.text.rstrip().split("\n") if line.strip()][-count:]

    def timeout_error(self, message: str) -> DeviceTimeoutError:
        screen = self.last_lines()
        return DeviceTimeoutError(
            f"{message}; last screen: " + " | ".join(line.strip() for line in screen),
            hint="the device asked something certfleet does not know, or is silent; "
            "adjust the menu settings for this firmware or raise the timeout",
            screen="\n".join(screen),
        )

    async def settle(
        self, classify: Classify, accept: Sequence[str], timeout: float, waiting_for: str,
        *, stuck: float | None = None,
    ) -> tuple[str, str]:
        """Wait until the output after the mark goes quiet on a screen ``classify`` names.

        ``classify(window)`` returns ``(kind, line)`` or None (still drawing).
        Screens of a kind in ``accept`` are returned; other kinds (a question
        certfleet does not answer here) keep waiting, for ``stuck`` seconds of
        silence at most. A generic screen (kind ending in ``?``) needs the full
        quiet time; a specific one a short one. Raises DeviceTimeoutError.
        """
        import asyncssh

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_output = loop.time()
        short = min(self.quiet, 0.02)
        while True:
            now = loop.time()
            state = classify(self.since_mark())
            wait = short if state is not None and not state[0].endswith("?") else self.quiet
            if state is not None and now - last_output >= wait:
                kind = state[0].rstrip("?")
                if kind in accept:
                    return kind, state[1]
                if stuck is not None and now - last_output >= stuck:
                    raise self.timeout_error(f"no {waiting_for} after {stuck:g} s")
            if now >= deadline:
                raise self.timeout_error(f"no {waiting_for} after {timeout:g} s")
            step = deadline - now  # the text changes only with output: wait for it
            if state is not None:
                elapsed = now - last_output
                if elapsed < wait:
                    step = min(step, wait - elapsed)
                elif stuck is not None:
                    step = min(step, max(stuck - elapsed, 0.01))
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                # cancellation (Ctrl-C) that arrives just as output does.
                async with asyncio.timeout(step):
                    chunk = await self._process.stdout.read(4096)
            except TimeoutError:
                continue
            except (OSError, asyncssh.Error) as exc:
                raise DeviceConnectionError(f"the SSH session ended: {exc}",
                                            hint="check the device and retry") from exc
            if not chunk:
                raise DeviceConnectionError(
                    f"the SSH session ended while waiting for {waiting_for}; last screen: "
                    + " | ".join(line.strip() for line in self.last_lines()),
                    hint="check the device and retry",
                )
            self.feed(chunk)
            last_output = loop.time()

    def send(self, line: str) -> None:
        """Type ``line`` and Enter; what follows is read from here on."""
        self.mark = len(self.text)
        self._process.stdin.write(line + self.newline)

def prompt_shape(prompt: str) -> str:
    """A shell prompt without its digits and spaces: '[root@ovoc ~ 12]#' ~ '[root@ovoc ~ 13]#'."""
    return re.sub(r"[\d\s]+", "", prompt)


def last_line(window: str) -> str:
    """The last line with something on it (where a prompt waits)."""
    for line in reversed(window.split("\n")):
        if line.strip():
            return line.rstrip()
    return ""


def classify(window: str, menu: OvocMenu, root_prompt: str | None, *, loose_menu: bool = False,
             menu_window: str | None = None) -> tuple[str, str] | None:
    """What the screen after the last answer asks, once it is quiet.

    ``confirm``, ``password``, ``continue`` (Enter), ``menu`` (entries and a
    prompt), ``shell`` (back at root's prompt), ``unknown?`` (a line that ends
    like a question nobody here answers), or None (still drawing). Entries
    are read from ``menu_window`` (the text since the last menu choice) when
    given. With ``loose_menu`` (while walking menus) entries with the cursor
    left after a line that is no entry are a menu too, whatever its prompt
    ends with.
    """
    line = last_line(window)
    if not line:
        return None
    flags = re.IGNORECASE
    asked = line
    if re.fullmatch(r"\s*[^\w\s]{1,3}\s*", line):
        # a bare '>' or ':' under the question: read them as one line
        above = last_line(window[: window.rstrip().rfind("\n") + 1])
        asked = f"{above} {line.strip()}" if above else line
    if re.search(menu.confirm_prompt, asked, flags):
        return "confirm", asked
    if re.search(menu.password_prompt, asked, flags):
        return "password", asked
    if re.search(menu.continue_prompt, asked, flags):
        return "continue", asked
    root = prompt_shape(root_prompt or "")
    at_root = bool(root) and prompt_shape(line) == root
    options = menu_options(window if menu_window is None else menu_window)
    if options and not at_root and re.search(menu.menu_prompt, line, flags):
        return "menu", line
    if loose_menu and options and not at_root and not window.endswith("\n") \
            and not menu_options(line):
        return "menu?", line
    if at_root:
        return "shell", line
    if not root and _SHELL_END.search(line):
        return "shell?", line
    if _PROMPT_END.search(line):
        return "unknown?", line  # root's prompt is known: a '#' line here is something else
    return None


# Their names in certfleet.drivers.ovoc before the package.
_Screen = Screen
_prompt_shape = prompt_shape
_last_line = last_line
