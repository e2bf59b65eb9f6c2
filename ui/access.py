"""Who may see the dashboard. Called by the router before any page is registered.

In order: an ``[auth]`` section in ``st.secrets`` means OIDC with ``st.login``
(optionally narrowed by ``[access] allowed_emails`` / ``allowed_domains``); else
``DASHBOARD_PASSWORD`` (constant-time comparison, a failed attempt says only that
it failed; failures count in the process-wide ``web.guard.limiter``, and a locked-out
client is told how long to wait and its guesses are not compared); else the dashboard
opens only when the server listens on localhost, with a warning. Anything else shows
nothing but the refusal. Signing out also kills the session's download links.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

from core import RetentionError
from core.i18n import _
from core.present import human_duration
from web import guard

from .downloads import revoke_session_grant
from .state import get_settings, raw_password, secrets_dict

log = logging.getLogger(__name__)

LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
_AUTHED = "_lrc_password_ok"  # session key: a digest of the password this session proved
FAILED_DELAY_S = 0.5  # slows guessing; the same for every failure
_LIMITED = "dashboard password"  # what the limiter's log lines name


def server_is_local() -> bool:
    """True when the server listens on a loopback address only (unset means all interfaces)."""
    return str(st.get_option("server.address") or "") in LOCAL_ADDRESSES


def auth_section() -> Mapping[str, Any] | None:
    section = secrets_dict().get("auth")
    return section if isinstance(section, Mapping) and section else None


def configured_password() -> str | None:
    try:
        return get_settings().dashboard_password
    except RetentionError:  # bad settings still have to be gated; the page shows the error after
        return raw_password()


def access_mode() -> str:
    """``oidc`` | ``password`` | ``local`` (no auth, localhost) | ``refused`` (no auth, not localhost)."""
    if auth_section():
        return "oidc"
    if configured_password():
        return "password"
    return "local" if server_is_local() else "refused"


def require_access() -> str:
    """Return the access mode when this session may see the dashboard; otherwise render the gate and stop."""
    mode = access_mode()
    if mode == "oidc":
        _oidc_gate()
    elif mode == "password":
        _password_gate(configured_password() or "")
    elif mode == "refused":
        st.title("Log Retention Console")
        st.error(
            _("Access is not configured, and this server is not bound to localhost: nothing is shown. "
              "Set DASHBOARD_PASSWORD or an [auth] section in .streamlit/secrets.toml, "
              "or run with server.address = \"localhost\"."),
            icon=":material/lock:",
        )
        st.stop()
    else:
        st.sidebar.warning(
            _("No login is configured: anyone who can reach this machine's localhost can use this "
              "dashboard. Set DASHBOARD_PASSWORD before exposing it."),
            icon=":material/lock_open:",
        )
    return mode


def session_allowed() -> bool:
    """Whether this session passed the gate, without rendering anything (each page checks it again)."""
    mode = access_mode()
    if mode == "oidc":
        email = st.user.get("email")
        return _logged_in() and _allowed(email if isinstance(email, str) else None)
    if mode == "password":
        proved = st.session_state.get(_AUTHED)
        return bool(proved) and hmac.compare_digest(proved, _digest(configured_password() or ""))
    return mode == "local"


def _digest(password: str) -> str:
    return hashlib.sha256(b"lrc-session\x00" + password.encode()).hexdigest()


_REQUESTED = "_lrc_requested_page"  # session key: the page whose URL the session was opened with


def _remember_requested_page() -> None:
    """Note the page the browser asked for (a reload, a bookmark) before the sign-in form replaces it."""
    try:
        url = st.context.url
    except RuntimeError:  # no runtime (bare mode)
        url = None
    if url and _REQUESTED not in st.session_state:
        st.session_state[_REQUESTED] = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def return_to_requested_page(pages: list[Any], current: Any) -> None:
    """Once signed in, go to the page the session was opened on (the router's ``pages``, the ``current`` one).

    Streamlit lands on the default page after the sign-in form; without this, reloading Run Cleanup during a
    cleanup would come back on Overview instead of the run's live progress.
    """
    wanted = st.session_state.pop(_REQUESTED, None)
    page = next((p for p in pages if wanted and p.url_path == wanted), None)
    if page is not None and page.url_path != current.url_path:
        st.switch_page(page)


def _password_gate(expected: str) -> None:
    proved = st.session_state.get(_AUTHED)
    if proved and hmac.compare_digest(proved, _digest(expected)):
        st.sidebar.button(_("Sign out"), key="sign_out", icon=":material/logout:", on_click=_sign_out)
        return
    _remember_requested_page()
    _left, middle, _right = st.columns([1, 2, 1])
    with middle:
        st.title("Log Retention Console")
        with st.form("sign_in", clear_on_submit=True, border=True):
            typed = st.text_input(_("Password"), type="password", key="login_password")
            submitted = st.form_submit_button(_("Sign in"), type="primary", key="sign_in_button")
        client = client_address()
        wait = guard.limiter.retry_after(client)
        if submitted and not wait:  # a locked-out client's guess is never compared
            if typed and hmac.compare_digest(typed.encode(), expected.encode()):
                guard.limiter.success(client)
                st.session_state[_AUTHED] = _digest(expected)
                st.rerun()
            time.sleep(FAILED_DELAY_S)
            wait = guard.limiter.failure(client, _LIMITED) if typed else 0.0  # an empty form guesses nothing
            if not wait:
                st.error(_("Sign-in failed."), icon=":material/block:")
        if wait:
            lockout_message(wait)
    st.stop()


def client_address() -> str:
    """The session's client address as the limiter keys it (``local`` for loopback and tests)."""
    try:
        address = st.context.ip_address
    except RuntimeError:  # no runtime (bare mode)
        address = None
    return address if isinstance(address, str) and address else "local"


def lockout_message(wait_s: float) -> None:
    """The error a locked-out session sees, with the time left."""
    seconds = max(1, math.ceil(wait_s))
    left = _("{s} s").format(s=seconds) if seconds < 60 else human_duration(seconds)
    st.error(_("Too many failed sign-ins. Try again in {left}.").format(left=left), icon=":material/timer:")


def _sign_out() -> None:
    st.session_state.pop(_AUTHED, None)
    revoke_session_grant()


def _log_out() -> None:
    revoke_session_grant()
    st.logout()


def _logged_in() -> bool:
    return st.user.get("is_logged_in") is True


def _providers(auth: Mapping[str, Any]) -> list[str | None]:
    named = [k for k, v in auth.items() if isinstance(v, Mapping)]
    return [None] if "client_id" in auth or not named else named


def _allowed(email: str | None) -> bool:
    rules = secrets_dict().get("access")
    if not isinstance(rules, Mapping):
        return True
    emails = {str(e).lower() for e in rules.get("allowed_emails", [])}
    domains = {str(d).lower().lstrip("@") for d in rules.get("allowed_domains", [])}
    if not emails and not domains:
        return True
    email = (email or "").lower()
    return email in emails or (bool(email) and email.rsplit("@", 1)[-1] in domains)


def _oidc_gate() -> None:
    auth = auth_section() or {}
    if not _logged_in():
        st.title("Log Retention Console")
        st.write(_("Sign in to continue."))
        for provider in _providers(auth):
            label = _("Log in") if provider is None else _("Log in with {provider}").format(provider=provider.title())
            st.button(label, key=f"login_{provider or 'default'}", type="primary",
                      on_click=st.login, args=(provider,) if provider else ())
        st.stop()
    email = st.user.get("email")
    if not _allowed(email if isinstance(email, str) else None):
        st.title("Log Retention Console")
        st.error(_("This account is not allowed to use this dashboard."), icon=":material/block:")
        st.button(_("Log out"), key="logout_refused", on_click=st.logout)
        st.stop()
    st.sidebar.caption(_("Signed in as {who}").format(who=st.user.get("name") or email or "user"))
    st.sidebar.button(_("Log out"), key="logout", icon=":material/logout:", on_click=_log_out)
