"""The only door to the database: SQLAlchemy Core, bound parameters, pushed-down aggregation.

Never imports streamlit. Every read takes the set of orgs the caller may see.
"""
