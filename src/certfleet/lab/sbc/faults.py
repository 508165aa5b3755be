"""Faults injected into a lab SBC unit: latency, drops, error answers, hangs, frozen listeners."""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass


@dataclass
class FaultRule:
    """Fail matching requests: the ``nth`` match and the ``times - 1`` after it.

    ``action`` is ``drop`` (close without answer), ``500``, ``409``, ``400``,
    ``hang`` (hold the request until the lab stops), ``delay`` (sleep
    ``seconds`` then answer normally), ``hang-after`` or ``drop-after``
    (carry the request out, then hold it or close without answer: the
    change is made and the client never hears of it). ``held`` counts the
    requests the rule holds or dropped, once the change (if any) is made.
    ``method`` and ``path`` (an fnmatch pattern on the path after
    ``/api/v1``, e.g. ``/files/tls/*/certificate``) narrow which requests
    count; None matches all.
    """

    action: str
    method: str | None = None
    path: str | None = None
    nth: int = 1
    times: int = 1
    seconds: float = 0.0
    seen: int = 0
    fired: int = 0
    held: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


class Faults:
    """Faults injected into one lab SBC unit. Thread-safe; change it at any time."""

    ACTIONS = ("drop", "500", "409", "400", "hang", "delay", "hang-after", "drop-after")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = 0.0  # seconds added to every request
        self.rules: list[FaultRule] = []
        self.frozen_listeners: set[str] = set()  # roles that keep their certificate
        self.close_connections = False  # answer "Connection: close": one request per connection

    def add(
        self,
        action: str,
        *,
        method: str | None = None,
        path: str | None = None,
        nth: int = 1,
        times: int = 1,
        seconds: float = 0.0,
    ) -> FaultRule:
        """Add a rule (see :class:`FaultRule`). Raises ValueError for an unknown action."""
        if action not in self.ACTIONS:
            raise ValueError(f"action must be one of {self.ACTIONS!r}, not {action!r}")
        if nth < 1 or times < 1:
            raise ValueError(f"nth and times must be >= 1, not {nth!r} and {times!r}")
        rule = FaultRule(action, method, path, nth, times, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def busy(self, times: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        """Answer the next ``times`` matching requests with 409 (device busy)."""
        self.add("409", method=method, path=path, times=times)

    def freeze(self, role: str) -> None:
        """Keep listener ``role`` (management, sip, teams) on its current certificate."""
        self.frozen_listeners.add(role)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
        self.latency = 0.0
        self.frozen_listeners.clear()

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any (counts the request)."""
        with self._lock:
            chosen: FaultRule | None = None
            for rule in self.rules:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if chosen is None and rule.nth <= rule.seen and rule.fired < rule.times:
                    rule.fired += 1
                    chosen = rule
            return chosen

