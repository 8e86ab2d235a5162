"""The billing domain core: pricing, invoice, allocation, analytics, ingestion rules, CLI.

Pure functions over Polars frames and Decimal. Never imports streamlit.
"""
