"""Who may reach the server at all, and how fast anyone may guess a secret.

Three process-wide defences, shared by the dashboard's sessions and the HTTP routes
(Streamlit runs every session in this one process, so module-level objects are shared):

- :class:`HostGuard`, an ASGI middleware mounted by ``server.py`` in front of every
  route (pages, static files, the ``/_stcore/stream`` websocket, downloads, the trigger).
  Without a password or OIDC login, only loopback names and addresses and the names in
  ``TRUSTED_HOSTS`` are served: a DNS-rebinding page (``Host: rebind.attacker.example``)
  gets 403 before anything runs. With a login, a websocket from a foreign ``Origin``
  is still refused (cross-site websocket hijacking of an OIDC cookie).
- :data:`limiter`, a :class:`FailureLimiter`: failed dashboard passwords and trigger tokens
  per client address and in total; a locked-out client is refused before its guess is compared.
- :data:`grants`, a :class:`SessionGrants`: the live download grants of signed-in sessions,
  revoked at sign-out or when the session ends (see ``ui.downloads``).

Test knobs (read once when this module is imported; not user settings):
``LRC_GUARD_WINDOW_S``, ``LRC_GUARD_CLIENT_LIMIT``, ``LRC_GUARD_GLOBAL_LIMIT``,
``LRC_GUARD_LOCKOUT_S``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Routes that answer the network on their own terms: /healthz reveals nothing (host health
# checks send any Host), the trigger routes demand a bearer token a browser never adds.
HEALTH_PATH = "/healthz"
TOKEN_PATHS = ("/run-cleanup", "/runs/")
_LOOPBACK_NAMES = frozenset({"localhost"})
_HOST_CHARS = re.compile(r"[a-z0-9._:-]+")  # DNS names, IPv4 and (unbracketed) IPv6 literals


# ---------------------------------------------------------------------------
# Host names


def host_name(value: str | None) -> str | None:
    """The lower-case host name of a ``Host`` header or URL netloc (port dropped), or None when malformed."""
    if not value:
        return None
    try:
        parts = urlsplit("//" + value.strip())
        name, _ = parts.hostname, parts.port  # .port validates a given port
    except ValueError:
        return None
    if not name or parts.username is not None or parts.password is not None or parts.path or parts.query:
        return None
    name = name.lower().rstrip(".")
    return name if _HOST_CHARS.fullmatch(name) else None


def is_loopback(name: str | None) -> bool:
    """``localhost``, 127.0.0.0/8, ``::1`` (and an IPv4-mapped loopback); never a name that merely resolves there."""
    if not name:
        return False
    if name in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def trusted_hosts(env: Mapping[str, Any]) -> frozenset[str]:
    """The host names of ``TRUSTED_HOSTS`` in ``env`` (comma-separated; ports and case ignored).

    ``env`` is one settings layer or their merge (environment, ``.env``, secrets). Entries
    that are not host names are ignored with a warning.
    """
    names = set()
    for item in str(env.get("TRUSTED_HOSTS") or "").split(","):
        if not item.strip():
            continue
        name = host_name(item)
        if name is None:
            log.warning("TRUSTED_HOSTS: ignored %r: not a host name", item.strip())
        else:
            names.add(name)
    return frozenset(names)


# ---------------------------------------------------------------------------
# The host and origin check


@dataclass(frozen=True)
class HostPolicy:
    """What the server's configuration allows, as :class:`HostGuard` applies it to one request.

    ``login``: a dashboard password or an OIDC ``[auth]`` section is configured.
    ``listens_on_loopback``: ``server.address`` is a loopback address.
    """

    login: bool
    listens_on_loopback: bool
    trusted: frozenset[str] = frozenset()

    def allows_name(self, name: str | None) -> bool:
        return is_loopback(name) or (name is not None and name in self.trusted)

    def refusal(self, scope: Scope) -> str | None:
        """Why this request must be refused (for the log), or None to serve it."""
        headers = _headers(scope)
        host, origin = headers.get("host"), headers.get("origin")
        path = str(scope.get("path") or "")
        if not self.login:
            if path == HEALTH_PATH:
                return None
            if not self.listens_on_loopback and path.startswith(TOKEN_PATHS):
                return None  # reachable from the network anyway; the bearer token guards it
            if not self.allows_name(host_name(host)):
                return "host not allowed without a login"
            if origin is not None and not self.allows_name(host_name(urlsplit(origin).netloc)):
                return "origin not allowed without a login"
        if scope["type"] == "websocket" and origin is not None:
            netloc = urlsplit(origin).netloc.lower()
            if netloc != (host or "").lower() and host_name(netloc) not in self.trusted:
                return "cross-origin websocket"
        return None


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers by lower-case name (the first of repeated ones)."""
    out: dict[str, str] = {}
    for key, value in scope.get("headers") or ():
        out.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def _clip(value: str | None, limit: int = 120) -> str | None:
    """A header value short enough for a log line (repr escapes the rest)."""
    return value if value is None or len(value) <= limit else value[:limit] + "…"


def current_policy() -> HostPolicy:
    """The policy from the dashboard's own settings sources (secrets > environment > ``.env``).

    Reads the raw layers, not validated Settings: a password too short for the settings
    still counts as a login (the dashboard then gates and reports the bad setting).
    """
    import streamlit as st

    from core.config import read_sources

    raw = read_sources(secrets_files=[str(p) for p in st.get_option("secrets.files") or []])
    try:
        auth = st.secrets.get("auth") if st.secrets.load_if_toml_exists() else None
    except (OSError, ValueError, AttributeError):  # an unreadable secrets file counts as none
        auth = None
    login = bool(raw.get("DASHBOARD_PASSWORD")) or (isinstance(auth, Mapping) and bool(auth))
    local = is_loopback(host_name(str(st.get_option("server.address") or "")))
    return HostPolicy(login=login, listens_on_loopback=local, trusted=trusted_hosts(raw))


class HostGuard:
    """ASGI middleware: answers 403 (a websocket: refused before the upgrade) to what the policy refuses.

    ``policy`` is re-read at most every ``ttl_s`` seconds (a page load is dozens of
    requests), so a changed ``.env`` or secrets file takes effect within that time.
    """

    def __init__(self, app: ASGIApp, *, policy: Callable[[], HostPolicy] = current_policy,
                 ttl_s: float = 2.0) -> None:
        self.app = app
        self._policy = policy
        self._ttl_s = ttl_s
        self._cached: tuple[float, HostPolicy] | None = None
        self._lock = threading.Lock()

    def policy(self) -> HostPolicy:
        now = time.monotonic()
        with self._lock:
            if self._cached is None or now - self._cached[0] > self._ttl_s:
                try:
                    policy = self._policy()
                except Exception:  # an unreadable configuration: serve loopback names only
                    log.exception("could not read the access configuration; serving loopback names only")
                    policy = HostPolicy(login=False, listens_on_loopback=True)
                self._cached = (now, policy)
            return self._cached[1]

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        why = self.policy().refusal(scope)
        if why is None:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        client = scope.get("client") or ("?", 0)
        log.warning("refused %s %s from %s: %s (Host %r, Origin %r)", scope["type"], scope.get("path"), client[0],
                    why, _clip(headers.get("host")), _clip(headers.get("origin")))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
            return
        body = b"403 Forbidden: this server does not answer to this host name (see docs/security.md)\n"
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------
# Failed secrets


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)
    lockouts: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class FailureLimiter:
    """Failed guesses of a secret, per client address and in total (thread-safe, process-wide).

    - ``client_limit`` failures of one address within ``window_s`` lock that address out
      for ``lockout_s``, doubled at each further lockout, never longer than ``window_s``;
      a window without failures forgets the address.
    - ``global_limit`` failures of all addresses within ``window_s`` lock everyone out
      until the oldest of them is ``window_s`` old (guessing from many addresses).

    So at most ``window_s`` after the last failure every client is let in again. A success
    clears that client's own failures, never the global count.
    """

    def __init__(self, *, window_s: float = 300.0, client_limit: int = 5, global_limit: int = 50,
                 lockout_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.client_limit, self.global_limit = window_s, client_limit, global_limit
        self.lockout_s = lockout_s
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FailureLimiter:
        """Defaults, or the ``LRC_GUARD_*`` test knobs in ``env``."""
        def number(name: str, default: float) -> float:
            try:
                return float(env.get(name) or default)
            except ValueError:
                return default

        window = number("LRC_GUARD_WINDOW_S", 300.0)
        return cls(window_s=window, client_limit=int(number("LRC_GUARD_CLIENT_LIMIT", 5)),
                   global_limit=int(number("LRC_GUARD_GLOBAL_LIMIT", 50)),
                   lockout_s=number("LRC_GUARD_LOCKOUT_S", min(60.0, window)))

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now). Call before comparing its guess."""
        now = self._clock()
        with self._lock:
            self._forget(now)
            waits = [0.0]
            state = self._clients.get(client)
            if state is not None:
                waits.append(state.locked_until - now)
            if len(self._all) >= self.global_limit:
                waits.append(self._all[len(self._all) - self.global_limit] + self.window_s - now)
            return max(waits)

    def failure(self, client: str, what: str) -> float:
        """Record a failed guess (``what``: e.g. "dashboard password"; never the guess); returns :meth:`retry_after`."""
        now = self._clock()
        with self._lock:
            self._forget(now)
            state = self._clients.setdefault(client, _Client())
            state.failures.append(now)
            state.last_failure = now
            self._all.append(now)
            if len(state.failures) >= self.client_limit:
                state.lockouts += 1
                state.locked_until = now + min(self.lockout_s * 2 ** (state.lockouts - 1), self.window_s)
                state.failures.clear()
                log.warning("%s: client %s locked out for %.0f s after %d failures (lockout %d)", what, client,
                            state.locked_until - now, self.client_limit, state.lockouts)
            total = len(self._all)
        wait = self.retry_after(client)
        log.warning("%s: failed attempt from %s (%d failures from all clients in the last %.0f s)", what, client,
                    total, self.window_s)
        if total == self.global_limit:
            log.error("%s: %d failures in %.0f s from all clients: everyone is locked out for up to %.0f s",
                      what, total, self.window_s, self.window_s)
        return wait

    def success(self, client: str) -> None:
        """A right guess: forget this client's failures (the global count stays)."""
        with self._lock:
            self._clients.pop(client, None)

    def _forget(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for key in [k for k, s in self._clients.items() if s.last_failure <= cutoff and s.locked_until <= now]:
            del self._clients[key]
        for state in self._clients.values():
            while state.failures and state.failures[0] <= cutoff:
                state.failures.popleft()


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


# ---------------------------------------------------------------------------
# Download grants


class SessionGrants:
    """Random grant ids of live dashboard sessions (thread-safe, process-wide).

    A download link names a grant; the route serves it only while the grant is live:
    :meth:`revoke` at sign-out, and a grant whose Streamlit session has ended is dead
    (``is_live_session`` is asked on every check). Bounded: the oldest grants go first.
    """

    def __init__(self, *, limit: int = 10_000,
                 is_live_session: Callable[[str], bool] | None = None) -> None:
        self._grants: dict[str, str | None] = {}  # grant id -> Streamlit session id (None: no session)
        self._lock = threading.Lock()
        self.limit = limit
        self._is_live_session = is_live_session or _streamlit_session_is_live

    def issue(self, session_id: str | None) -> str:
        grant = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[grant] = session_id
            while len(self._grants) > self.limit:
                self._grants.pop(next(iter(self._grants)))
        return grant

    def revoke(self, grant: str | None) -> None:
        if grant:
            with self._lock:
                self._grants.pop(grant, None)

    def is_live(self, grant: str) -> bool:
        with self._lock:
            if grant not in self._grants:
                return False
            session_id = self._grants[grant]
        if session_id is not None and not self._is_live_session(session_id):
            self.revoke(grant)
            return False
        return True


def _streamlit_session_is_live(session_id: str) -> bool:
    """Whether the Streamlit runtime still has this session connected (True without a runtime)."""
    from streamlit import runtime

    if not runtime.exists():
        return True
    return runtime.get_instance().is_active_session(session_id)


limiter = FailureLimiter.from_env(os.environ)
grants = SessionGrants()
