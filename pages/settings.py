"""Settings: the effective configuration (secrets masked), the database, access, and a Slack test."""

import pandas as pd
import streamlit as st

from core import RetentionError, cleanup_running
from core.models import NotifyStatus
from core.notify import send_test_message
from ui import downloads
from ui.access import access_mode
from ui.state import settings_or_stop

ACCESS = {
    "oidc": "OIDC login (st.login, [auth] in secrets.toml)",
    "password": "DASHBOARD_PASSWORD",
    "local": "none: open on localhost only",
}

settings = settings_or_stop()
st.title("Settings")
st.caption("Defaults < `.env` < environment < `.streamlit/secrets.toml` (top-level keys). Secrets are never shown.")

c1, c2 = st.columns(2)
with c1:
    st.subheader("Database")
    st.markdown(f"**Connected to:** `{settings.database_url_masked}`")
    st.markdown(f"**Table:** `{settings.table}` · **timestamp column:** `{settings.timestamp_column}`")
    try:
        busy = cleanup_running(settings)
        st.markdown("**Cleanup lock:** " + ("held: a cleanup is running" if busy else "free"))
    except RetentionError as exc:
        st.error(exc.one_line(), icon=":material/error:")
with c2:
    st.subheader("Access")
    st.markdown(f"**Dashboard login:** {ACCESS.get(access_mode(), access_mode())}")
    server = st.get_option("server.address") or "all interfaces"
    st.markdown(f"**Server address:** `{server}`")
    st.markdown("**Backup downloads:** " + (
        f"streamed from disk through `{downloads.ROUTE}` (signed links)" if downloads.streamed_available()
        else "download buttons (the file is read into memory; run server.py to stream)"))

st.subheader("Effective configuration")
rows = [(name, "(not set)" if value in (None, "") else str(value)) for name, value in settings.masked().items()]
st.dataframe(pd.DataFrame(rows, columns=["setting", "value"]), hide_index=True, width="stretch",
             height=35 * (len(rows) + 1) + 3, column_config={"setting": st.column_config.TextColumn(width="medium")})

st.subheader("Slack")
if settings.slack_bot_token:
    how = f"bot token, channel `{settings.slack_channel}`, API `{settings.slack_api_base_url}`"
elif settings.slack_webhook_url:
    how = "incoming webhook"
else:
    how = "not configured (set SLACK_BOT_TOKEN and SLACK_CHANNEL, or SLACK_WEBHOOK_URL)"
st.markdown(f"**Reports go through:** {how}")
if st.button("Send test message", key="slack_test", icon=":material/send:"):
    with st.spinner("Posting to Slack…"):
        outcome = send_test_message(settings)
    text = f"Slack test message: {NotifyStatus(outcome.status).label}" + (
        f" — {outcome.detail}" if outcome.detail else "")
    {NotifyStatus.SENT: st.success, NotifyStatus.SKIPPED: st.info}.get(outcome.status, st.error)(text)
