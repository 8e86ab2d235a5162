"""`python -m metering`: the command line (names and exit codes fixed by shared/DOMAIN.md).

Each command module registers its own subcommand with ``register(subparsers)`` and sets
``func(args, engine) -> int``. The app calls the same functions these commands call.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import sqlalchemy as sa

from queries.engine import database_url, make_engine, upgrade

# modules that register subcommands, in help order
COMMAND_MODULES = (
    "metering.pricing",
    "metering.ingest",
    "metering.invoice",
    "metering.demo",
    "metering.alerts",
)

EXIT_OK = 0
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m metering", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: $METERING_DATABASE_URL, else sqlite file data/metering.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("init-db", help="create or upgrade the schema")
    p.set_defaults(func=_cmd_init_db)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _cmd_init_db(args, engine: sa.Engine) -> int:
    upgrade(engine)
    print(f"schema at head on {engine.url.render_as_string(hide_password=True)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = database_url(args.database_url)
    try:
        engine = make_engine(url, statement_timeout_ms=None)
        return int(args.func(args, engine) or 0)
    except sa.exc.OperationalError as exc:
        msg = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        print(f"error: database unavailable ({msg}); check --database-url or "
              f"METERING_DATABASE_URL and that the server is running", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
