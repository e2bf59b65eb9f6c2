"""HTTP routes served beside the dashboard by ``server.py`` (one process, one port).

Thin handlers only: authentication, status codes and JSON; the work is ``core``'s.
"""

from __future__ import annotations

import logging

from starlette.routing import Route

from core.config import load_dashboard_settings
from core.errors import RetentionError
from core.masking import install_log_redaction

from .trigger import healthz, run_cleanup, run_status

__all__ = ["configure_logging", "routes"]

routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/run-cleanup", run_cleanup, methods=["GET", "POST"]),
    Route("/runs/{run_id}", run_status, methods=["GET"]),
]


def configure_logging(level: int = logging.INFO) -> None:
    """Send the core's and the trigger's log lines (one per step, secrets masked) to stderr.

    Streamlit configures only its own loggers; without this a hosted console's log
    would not say what a scheduled cleanup did. Every handler, Streamlit's and the root's
    included, gets :class:`core.masking.RedactingFilter`: the settings' secrets (known once
    they load) and anything shaped like a URL password are masked. Idempotent.
    """
    try:
        load_dashboard_settings()  # registers the secrets to mask; a bad setting is reported by the pages
    except RetentionError:
        pass
    for name in ("core", "web", "ui"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False
    install_log_redaction(*(logging.getLogger(n) for n in ("core", "web", "ui", "streamlit", "uvicorn",
                                                          "uvicorn.error", "uvicorn.access")))
