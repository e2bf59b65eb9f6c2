"""Streamlit helpers shared by the dashboard's pages (the only Streamlit code outside pages/).

Pages read widgets, call ``core`` and show results; what they share lives here:
settings from the environment and ``st.secrets`` (:mod:`ui.state`), the access gate
(:mod:`ui.access`), cached reads (:mod:`ui.data`), cleanups in a background thread
(:mod:`ui.jobs`), formatting (:mod:`ui.fmt`), the cutoff picker (:mod:`ui.widgets`)
and signed, streamed backup downloads (:mod:`ui.downloads`).
"""
