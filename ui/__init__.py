"""Streamlit helpers shared by the dashboard's pages (the only Streamlit code outside pages/).

Pages read widgets, call ``core`` and show results; what they share lives here:
cached settings, loaded by ``core.config`` (:mod:`ui.state`), the access gate
(:mod:`ui.access`), cached reads (:mod:`ui.data`), cleanups in a background thread
(:mod:`ui.jobs`), page-only display helpers (:mod:`ui.fmt`; everything else is
``core.present``), the cutoff picker (:mod:`ui.widgets`) and signed, streamed backup
downloads (:mod:`ui.downloads`).
"""
