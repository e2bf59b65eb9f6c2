"""Settings: the effective configuration (secrets masked), the database, access, and a Slack test."""

import pandas as pd
import streamlit as st

from core import RetentionError, cleanup_running
from core.config import SHOWN_FOR_A_SECRET
from core.i18n import N_, _
from core.models import NotifyStatus
from core.notify import send_test_message
from ui import downloads
from ui.access import access_mode
from ui.state import settings_or_stop

ACCESS = {
    "oidc": N_("OIDC login (st.login, [auth] in secrets.toml)"),
    "password": "DASHBOARD_PASSWORD",
    "local": N_("none: open on localhost only"),
}

settings = settings_or_stop()
st.title(_("Settings"))
st.caption(_("Defaults < `.env` < environment < `.streamlit/secrets.toml` (top-level keys). Secrets are never shown."))

c1, c2 = st.columns(2)
with c1:
    st.subheader(_("Database"))
    st.markdown(_("**Connected to:** `{url}`").format(url=settings.database_url_masked))
    st.markdown(_("**Table:** `{table}` · **timestamp column:** `{column}`").format(
        table=settings.table, column=settings.timestamp_column))
    try:
        busy = cleanup_running(settings)
        st.markdown(_("**Cleanup lock:** ") + (_("held: a cleanup is running") if busy else _("free")))
    except RetentionError as exc:
        st.error(exc.localized(), icon=":material/error:")
with c2:
    st.subheader(_("Access"))
    st.markdown(_("**Dashboard login:** {mode}").format(mode=_(ACCESS.get(access_mode(), access_mode()))))
    server = st.get_option("server.address") or _("all interfaces")
    st.markdown(_("**Server address:** `{server}`").format(server=server))
    st.markdown(_("**Backup downloads:** ") + (
        _("streamed from disk through `{route}` (signed links)").format(route=downloads.ROUTE)
        if downloads.streamed_available()
        else _("download buttons (the file is read into memory; run server.py to stream)")))

st.subheader(_("Effective configuration"))
rows = [(name, _("(not set)") if value in (None, "") else _("•••••• (set)") if value == SHOWN_FOR_A_SECRET
         else str(value)) for name, value in settings.masked().items()]
st.dataframe(pd.DataFrame(rows, columns=[_("setting"), _("value")]), hide_index=True, width="stretch",
             height=35 * (len(rows) + 1) + 3, column_config={_("setting"): st.column_config.TextColumn(width="medium"),
                                                      _("value"): st.column_config.TextColumn(width="large")})

st.subheader("Slack")
if settings.slack_bot_token:
    how = _("bot token, channel `{channel}`, API `{api}`").format(channel=settings.slack_channel,
                                                                  api=settings.slack_api_base_url)
elif settings.slack_webhook_url:
    how = _("incoming webhook")
else:
    how = _("not configured (set SLACK_BOT_TOKEN and SLACK_CHANNEL, or SLACK_WEBHOOK_URL)")
st.markdown(_("**Reports go through:** {how}").format(how=how))
if st.button(_("Send test message"), key="slack_test", icon=":material/send:"):
    with st.spinner(_("Posting to Slack…")):
        outcome = send_test_message(settings)
    text = _("Slack test message: {status}").format(status=NotifyStatus(outcome.status).label) + (
        f" — {outcome.detail}" if outcome.detail else "")
    {NotifyStatus.SENT: st.success, NotifyStatus.SKIPPED: st.info}.get(outcome.status, st.error)(text)
