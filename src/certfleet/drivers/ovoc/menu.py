"""EmsServerManager as certfleet sees it: the menu settings and how labels are matched.

Pure: no SSH, no terminal. :class:`OvocMenu` holds the labels (numbers are a
fallback only), the prompt patterns and OVOC's verdict wording for one
firmware; :func:`menu_options` reads the entries of a screen, and
:func:`match_option` finds the entry of a :class:`MenuStep` by its label
(same text, prefix, contained, same words singular or plural, without the
parenthesised parts), then by number. :func:`answer_for` and
:func:`import_verdict` say what to type at a question and what OVOC's import
said.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError

__all__ = [
    "MenuStep",
    "OvocMenu",
    "answer_for",
    "back_option",
    "import_verdict",
    "keystore_refused",
    "match_option",
    "menu_options",
    "pick_option",
]

# A menu entry: "11. Label", "11) Label", "11 - Label", "[11] Label", "(11) Label", "q. Quit".
_OPTION = re.compile(
    r"^[\[(]?\s*([0-9]{1,3}|[A-Za-z])\s*(?:[.):\]]|\s-|-)\s*((?:[^\W\d_]|[(\[]).*?)\s*$")

@dataclass(frozen=True)
class MenuStep:
    """One menu choice: the entry whose text matches ``label``; ``number`` as a fallback."""

    label: str
    number: str | None = None


@dataclass(frozen=True)
class OvocMenu:
    """How EmsServerManager looks. Labels and numbers from the story; the rest [assumed].

    The prompt patterns are regular expressions searched, case-insensitively,
    in the last line with text on it once the screen has gone quiet (escape
    sequences removed). ``success`` and ``failure`` are searched in what the
    import printed. Every field can be overridden from the inventory for
    another firmware.

    * ``menu_prompt``: the question under a menu (with entries above it);
    * ``continue_prompt``: "Press Enter to continue", pagers ("-- More --"): answered
      with Enter;
    * ``confirm_prompt``: "Are you sure? (y/n)": answered with ``confirm_answer``
      ("yes" when the question offers yes/no);
    * ``password_prompt``: the only place the keystore password is ever typed
      (again when asked to confirm it);
    * ``keystore_failure``: searched in what a refused import printed: OVOC did not
      take the keystore password (keytool's refusal), so importing the previous files
      again under the same password would be refused too and the rollback does not try;
    * ``back_labels``: the entry that leaves a menu (its key is read from the
      screen); ``back`` the key to type when no such entry is shown.
    """

    path: tuple[MenuStep, ...] = (
        MenuStep("Security"),
        MenuStep("Server Certificate Updates", "11"),
        MenuStep("Import Server Certificates from Certificate Authority (CA)", "3"),
    )
    command: str = "EmsServerManager"
    menu_prompt: str = r"[:>?\]][ \t]*$"
    continue_prompt: str = (
        r"\b(?:press|hit|type)\s+(?:the\s+)?[\[<(]?\s*(?:enter|return|any\s+key|a\s+key)\b"
        r"|-+\s*more\s*-+|^\s*\(?more\)?\s*(?:\(\d+%\))?\s*[:>]?\s*$"
    )
    confirm_prompt: str = (
        r"[(\[]\s*y(?:es)?\s*/\s*no?\s*[)\]]|\by(?:es)?/no?\b|\bare\s+you\s+sure\b"
        r"|\b(?:proceed|continue)\s*\?\s*$"
    )
    confirm_answer: str = "y"
    password_prompt: str = (
        r"^(?!.*\b(?:error|fail\w*|invalid|incorrect|wrong|mismatch|not\s+match|success\w*)\b)"
        r"(?:.*\bpass(?:word|phrase)\b.*[:>?\]][ \t]*$"
        r"|\s*(?:please\s+)?(?:enter|type|re-?enter|retype|re-?type|confirm|verify|repeat"
        r"|provide|input)\b.*\bpass(?:word|phrase)\b[^.!]*$"
        r"|\s*pass(?:word|phrase)\s+used\b[^.!]*$)"
    )
    success: tuple[str, ...] = (
        r"PKCS#12 file and JKS Keystore generated successfully",
        r"Imported files and generated PKCS#12 with JKS Keystore files",
    )
    failure: str = r"\b(?:error|failed|failure|fail|could\s+not|cannot|unable\s+to)\b"
    keystore_failure: str = (
        r"\bkeytool\s+error\b|\bkeystore\s+password\b.*\b(?:incorrect|invalid|wrong|must)\b"
        r"|\bpassword\s+was\s+incorrect\b|\bpassword\b.*\bat\s+least\s+\d+\s+characters\b"
    )
    back_labels: str = (
        r"^(?:quit|exit|back|go\s+back|return|previous(?:\s+menu)?|main\s+menu|up)\b"
    )
    back: str = "q"

    def __post_init__(self) -> None:
        patterns = {"menu_prompt": self.menu_prompt, "continue_prompt": self.continue_prompt,
                    "confirm_prompt": self.confirm_prompt,
                    "password_prompt": self.password_prompt, "failure": self.failure,
                    "keystore_failure": self.keystore_failure,
                    "back_labels": self.back_labels}
        patterns.update({f"success[{i}]": p for i, p in enumerate(self.success)})
        for name, value in patterns.items():
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"menu {name} {value!r} is not a regular expression: {exc}") from exc
        if not self.path:
            raise ValueError("menu path must name at least one entry")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object]) -> OvocMenu:
        """A menu from inventory settings: ``labels`` and ``numbers`` (lists, same length)
        for the path, and any other field by name. Raises ConfigError."""
        values: dict[str, Any] = {}
        known = {"labels", "numbers", "command", "menu_prompt", "continue_prompt",
                 "confirm_prompt", "confirm_answer", "password_prompt", "success", "failure",
                 "keystore_failure", "back_labels", "back"}
        for raw_key, value in mapping.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ConfigError(f"OVOC menu setting {raw_key!r} is unknown",
                                  hint=f"use one of {', '.join(sorted(known))}")
            values[key] = value
        labels = values.pop("labels", None)
        numbers = values.pop("numbers", None)
        if labels is not None or numbers is not None:
            default = cls()
            labels = list(labels) if labels is not None else [s.label for s in default.path]
            numbers = list(numbers) if numbers is not None else [None] * len(labels)
            if len(numbers) != len(labels):
                raise ConfigError(f"OVOC menu numbers {numbers!r} do not pair with labels "
                                  f"{labels!r}", hint="give one number (or \"\") per label")
            values["path"] = tuple(MenuStep(str(label), str(number) if number else None)
                                   for label, number in zip(labels, numbers, strict=True))
        if "success" in values:
            values["success"] = tuple(values["success"])
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"OVOC menu settings: {exc}",
                              hint="fix the menu settings (--menu FILE; inventory: the "
                              "device's menu table)") from exc


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _words(text: str) -> frozenset[str]:
    """The words of a label, plural 's' dropped: 'Certificates Update' ~ 'Certificate Updates'."""
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") else w
                     for w in re.findall(r"[a-z0-9#]+", text.casefold()))


def menu_options(screen: str) -> list[tuple[str, str]]:
    """(key, label) of every menu entry on ``screen``.

    Entries look like ``11. Label``, ``11) Label``, `` 11 - Label``, ``[11] Label``,
    ``(11) Label`` or ``q. Quit``, one or more per line (columns apart by 3+ spaces).
    """
    options: list[tuple[str, str]] = []
    for line in screen.split("\n"):
        for cell in re.split(r"\t+|\s{3,}", line.strip()):
            match = _OPTION.match(cell)
            if match:
                options.append((match.group(1), match.group(2).strip()))
    return options


def pick_option(screen: str, step: MenuStep) -> str | None:
    """The key of the entry labelled ``step.label`` on ``screen`` (see :func:`match_option`)."""
    found = match_option(screen, step)
    return found[1] if found else None


def match_option(screen: str, step: MenuStep, *, fallbacks: bool = True
                  ) -> tuple[int, str] | None:
    """(how loosely it matched: 0 best, key) of the entry labelled ``step.label``.

    Tried in turn: the same text, a prefix ("Security" finds "Security Menu"),
    contained, all its words in the entry (plural or not), the same without
    its parenthesised parts ("... Authority (CA)" finds "... Authority"); then
    ``step.number``; last, the one entry whose words (two or more) are all in
    the label ("Import from CA").
    """
    options = [(key, _norm(text)) for key, text in menu_options(screen)]
    label = _norm(step.label)
    words = _words(step.label)
    core = _words(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", step.label))
    tests: tuple[Callable[[str], bool], ...] = (
        lambda t: t == label, lambda t: t.startswith(label), lambda t: label in t,
        lambda t: bool(words) and words <= _words(t),
        lambda t: bool(core) and core <= _words(t),
    )
    for tier, test in enumerate(tests):
        hits = [key for key, text in options if test(text)]
        if hits:
            return tier, hits[-1]
    if not fallbacks:
        return None
    if step.number is not None and any(key == step.number for key, _ in options):
        return len(tests), step.number
    inside = {key for key, text in options if len(_words(text)) >= 2 and _words(text) <= words}
    return (len(tests) + 1, inside.pop()) if len(inside) == 1 else None


def back_option(screen: str, pattern: str) -> str | None:
    """The key of the menu's Quit/Back/Exit entry, if it shows one."""
    hits = [key for key, text in menu_options(screen)
            if re.search(pattern, text.strip(), re.IGNORECASE)]
    return hits[-1] if hits else None



def answer_for(menu: OvocMenu, kind: str, line: str) -> str:
    """What to type at a confirmation or a 'Press Enter' screen (never a password)."""
    if kind == "confirm":
        answer = menu.confirm_answer
        if answer.casefold() in ("y", "yes") and re.search(r"yes\s*/\s*no", line, re.I):
            return "yes"
        return answer
    return ""


def import_verdict(menu: OvocMenu, output: str, *, known_only: bool = False
                   ) -> tuple[bool, str]:
    """(ok, the line that says so) from what the import printed; not ok when unclear
    (with ``known_only``, the line is then empty)."""
    lines = [line.strip() for line in output.split("\n")
             if line.strip() and not menu_options(line)]
    for pattern in menu.success:
        for line in lines:
            if re.search(pattern, line, re.IGNORECASE):
                return True, line
    for line in lines:
        if re.search(menu.failure, line, re.IGNORECASE):
            return False, line
    if known_only:
        return False, ""
    shown = " | ".join(lines[-3:]) if lines else "nothing"
    return False, f"no known verdict; OVOC printed: {shown}"


def keystore_refused(menu: OvocMenu, output: str) -> bool:
    """Whether what a refused import printed says OVOC did not take the keystore password."""
    return bool(output) and re.search(menu.keystore_failure, output,
                                      re.IGNORECASE | re.MULTILINE) is not None


# The names these had in certfleet.drivers.ovoc before it became a package.
_pick_option = pick_option
_match_option = match_option
_back_option = back_option
