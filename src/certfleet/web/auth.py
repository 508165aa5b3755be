"""Sessions, CSRF tokens and login throttling of ``certfleet serve``.

A session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` over HTTPS), kept in memory: a restart logs everyone out. Each
session has its CSRF token, which every form carries; the login form, before
any session, carries one tied to a cookie of its own (double submit).

Failed logins are slowed per user name and per client address: after
:data:`FREE_FAILURES` failures in a row, each further attempt is refused
until a delay has passed, doubling up to :data:`MAX_DELAY` seconds.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .users import Account

__all__ = ["FREE_FAILURES", "MAX_DELAY", "Session", "Sessions", "Throttle", "same_token"]

SESSION_COOKIE = "certfleet_session"
LOGIN_COOKIE = "certfleet_login"
FREE_FAILURES = 3
MAX_DELAY = 300.0
SESSION_SECONDS = 12 * 3600


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


@dataclass
class Session:
    account: Account
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    expires: float = field(default_factory=lambda: time.monotonic() + SESSION_SECONDS)


class Sessions:
    """The live sessions, by id (thread-safe)."""

    def __init__(self) -> None:
        self._items: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, account: Account) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(account)
        with self._lock:
            self._items[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._items.get(sid)
            if session is not None and session.expires < time.monotonic():
                del self._items[sid]
                return None
        return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)


class Throttle:
    """Failed logins per key (a user name, a client address); see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _now(self) -> float:
        return self._clock()

    def wait(self, *keys: str) -> float:
        """Seconds before another attempt with ``keys`` is allowed (0: allowed now)."""
        now = self._now()
        with self._lock:
            until = max((self._failures.get(k, (0, 0.0))[1] for k in keys), default=0.0)
        return max(0.0, until - now)

    def failed(self, *keys: str) -> None:
        now = self._now()
        with self._lock:
            for key in keys:
                count = self._failures.get(key, (0, 0.0))[0] + 1
                delay = (0.0 if count < FREE_FAILURES
                         else min(MAX_DELAY, 2.0 ** (count - FREE_FAILURES + 1)))
                self._failures[key] = (count, now + delay)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
