"""Usage billing: the frame. Identity, the org gate, navigation, shared sidebar filters (in the URL).

The logic is in ui/frame.py (pages started without this script run it too)."""

from __future__ import annotations

import streamlit as st

from ui.frame import framed, run_frame

st.set_page_config(page_title="Usage billing", page_icon=":material/receipt_long:", layout="wide")

page, _filters = run_frame()  # st.stop() on sign-in, no membership, a foreign org link
with framed():
    page.run()
