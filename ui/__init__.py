"""Streamlit-side helpers shared by app.py and pages/: URL state, cached loads, charts, formats.

Only this package, app.py and pages/ import streamlit.
"""
