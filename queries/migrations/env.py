"""Alembic environment: runs on the connection handed in by queries.engine.upgrade."""

from alembic import context

from queries.engine import make_engine
from queries.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # invoked from the alembic command line
    engine = make_engine(config.get_main_option("sqlalchemy.url") or None)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
