"""Log Retention Console dashboard: the router.

Run it directly (``streamlit run dashboard.py``) or through ``server.py``, which
wraps it with ``st.App`` for the HTTP trigger. Nothing is shown before the access
gate in :mod:`ui.access` lets the session in.

Pages live in ``pages/``. Streamlit treats a ``pages/`` folder beside the main
script as a legacy multipage app until the first ``st.navigation`` call in the
process, so a deep link to a freshly started server can run a page without this
router: every page therefore passes the same gate itself (``ui.state.settings_or_stop``),
and the browser test opens such a deep link first.
"""

import streamlit as st

from core.i18n import _
from ui.access import require_access, return_to_requested_page
from ui.layout import page_config, sidebar_connection

page_config()
require_access()
sidebar_connection()

PAGES = [
    st.Page("pages/overview.py", title=_("Overview"), icon=":material/monitoring:", default=True),
    st.Page("pages/preview.py", title=_("Preview"), icon=":material/preview:"),
    st.Page("pages/run_cleanup.py", title=_("Run Cleanup"), icon=":material/delete_sweep:"),
    st.Page("pages/backups.py", title=_("Backups"), icon=":material/archive:"),
    st.Page("pages/history.py", title=_("History"), icon=":material/history:"),
    st.Page("pages/settings.py", title=_("Settings"), icon=":material/settings:"),
]
current = st.navigation(PAGES)
return_to_requested_page(PAGES, current)
current.run()
