import sqlalchemy as sa

from queries.engine import current_revision, upgrade
from queries.schema import metadata


def test_init_db_is_idempotent_and_creates_every_table(engine):
    upgrade(engine)  # second upgrade is a no-op
    assert current_revision(engine) == "0001"
    names = set(sa.inspect(engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= names
