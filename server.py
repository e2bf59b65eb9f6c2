"""One process, one port: the dashboard plus the HTTP trigger routes.

    streamlit run server.py [--server.port 8501]

``streamlit run`` finds ``app`` below (an ``st.App``) and serves it with uvicorn:
the pages of ``dashboard.py`` and, beside them, ``/healthz``, ``/run-cleanup`` and
``/runs/<run_id>`` (see ``web/trigger.py`` and SPEC.md, "HTTP trigger").
"""

import streamlit as st

import web
from ui.downloads import routes as download_routes

web.configure_logging()

app = st.App("dashboard.py", routes=[*web.routes, *download_routes()])

if __name__ == "__main__":  # python server.py: the same server, without the streamlit CLI
    app.run()
