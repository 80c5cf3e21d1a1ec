"""The operator console's logins: a random session id held server-side (the cookie carries
nothing else), each session with its own CSRF token and an expiry. The admin key is checked once
at login and never kept."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "ragtune_console"
LOGIN_COOKIE = "ragtune_console_login"
"""Holds the login form's own CSRF token (double submit): there is no session before login."""
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    csrf_token: str
    expires: float
    """On the sessions' clock (monotonic seconds)."""


class ConsoleSessions:
    """Open console sessions, in memory (a restart logs everyone out), at most `max_sessions`:
    the oldest is dropped first, so that logins cannot grow memory without bound.

    Usage:
        sessions = ConsoleSessions(ttl_s=8 * 3600)
        session = sessions.open()                # at login: session.id goes in the cookie
        sessions.get(cookie)                     # the session, or None (unknown or expired)
        sessions.close(cookie)                   # logout
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_sessions: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._lock = threading.Lock()

    def open(self) -> ConsoleSession:
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            expires=self.clock() + self.ttl_s,
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires <= self.clock():
                del self._sessions[session_id]
                return None
            return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
