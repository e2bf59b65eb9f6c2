"""HTTP routes served beside the dashboard by ``server.py`` (one process, one port).

Thin handlers only: authentication, status codes and JSON; the work is ``core``'s.
"""

from __future__ import annotations

import logging

from starlette.routing import Route

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
    would not say what a scheduled cleanup did. Idempotent.
    """
    for name in ("core", "web", "ui"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False
