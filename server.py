"""One process, one port: the dashboard plus the HTTP trigger routes.

    streamlit run server.py [--server.port 8501]

``streamlit run`` finds ``app`` below (an ``st.App``) and serves it with uvicorn:
the pages of ``dashboard.py`` and, beside them, ``/healthz``, ``/run-cleanup`` and
``/runs/<run_id>`` (see ``web/trigger.py`` and README.md, "Scheduling").

Every request, the websocket upgrade included, first passes ``web.guard.HostGuard``
(user middleware runs before Streamlit's own): without a login only loopback and
``TRUSTED_HOSTS`` names are served (DNS rebinding), and a cross-origin websocket is
refused. See docs/security.md.
"""

import streamlit as st
from starlette.middleware import Middleware

import web
from ui.downloads import routes as download_routes
from web.guard import HostGuard

web.configure_logging()

app = st.App("dashboard.py", routes=[*web.routes, *download_routes()], middleware=[Middleware(HostGuard)])

if __name__ == "__main__":  # python server.py: the same server, without the streamlit CLI
    app.run()
