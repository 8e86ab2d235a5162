"""`python -m metering`: the command line (names and exit codes fixed by shared/DOMAIN.md).

Each command module registers its own subcommand with ``register(subparsers)`` and sets
``func(args, engine) -> int``. The app calls the same functions these commands call.

Identity: without ``--user`` (or ``$METERING_USER``) the caller is the *operator*, whoever
holds the database credentials: every org, every action. With it, the principal is built from
that user's memberships and put on ``args.principal``; commands check it through
``metering.access_cli`` (``require_org``, ``require_platform``, ``scope_of``).

Faults: an unreachable database, a statement timeout (``--statement-timeout-ms``, PostgreSQL)
and an access refusal all exit 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import sqlalchemy as sa

from metering.access import AccessDenied
from queries.engine import DatabaseUnavailable, database_url, make_engine, upgrade

# modules that register subcommands, in help order
COMMAND_MODULES = (
    "metering.pricing",
    "metering.ingest",
    "metering.invoice",
    "metering.demo",
    "metering.alerts",
    "metering.access_cli",
    "metering.pgroles",
)

EXIT_OK = 0
EXIT_USAGE = 2
USER_ENV = "METERING_USER"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m metering", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: $METERING_DATABASE_URL, else sqlite file data/metering.db)",
    )
    parser.add_argument(
        "--user",
        default=None,
        help=f"act as this user, scoped to their memberships (default: ${USER_ENV}; "
        "unset: the operator holding the database credentials, every org)",
    )
    parser.add_argument(
        "--statement-timeout-ms",
        type=_positive_int,
        default=None,
        metavar="MS",
        help="cancel any single SQL statement running longer than this (PostgreSQL; default: none)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("init-db", help="create or upgrade the schema")
    p.set_defaults(func=_cmd_init_db)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of milliseconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _cmd_init_db(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_platform

    require_platform(args)
    upgrade(engine)
    print(f"schema at head on {engine.url.render_as_string(hide_password=True)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from metering.access_cli import resolve_principal

    parser = build_parser()
    args = parser.parse_args(argv)
    url = database_url(args.database_url)
    user = args.user if args.user is not None else os.environ.get(USER_ENV) or None
    try:
        engine = make_engine(url, statement_timeout_ms=args.statement_timeout_ms)
        args.principal = resolve_principal(engine, user)
        return int(args.func(args, engine) or 0)
    except AccessDenied as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseUnavailable, sa.exc.OperationalError, *_DRIVER_FAULTS) as exc:
        print(f"error: {describe_db_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _driver_faults() -> tuple[type[BaseException], ...]:
    """psycopg errors raised outside SQLAlchemy (ingest's COPY on the raw connection)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return ()
    return (psycopg.OperationalError,)


_DRIVER_FAULTS = _driver_faults()


def describe_db_error(exc: BaseException) -> str:
    """One line naming the cause: a statement timeout, a missing privilege, or the database
    being unavailable."""
    orig = exc if isinstance(exc, DatabaseUnavailable) else (getattr(exc, "orig", None) or exc)
    text = str(orig).strip()
    first = text.splitlines()[0] if text else type(orig).__name__
    if _is_timeout(exc, orig, text):
        return (f"database query timed out ({first}); raise --statement-timeout-ms or narrow "
                "the request")
    denied = getattr(importlib.import_module("queries.engine"), "DatabasePermissionDenied", None)
    if denied is not None and isinstance(exc, denied):
        return f"database permission denied ({first}); this login may not do that"
    return (f"database unavailable ({first}); check --database-url or METERING_DATABASE_URL "
            "and that the server is running")


def _is_timeout(exc: BaseException, orig: BaseException, text: str) -> bool:
    timeout_cls = getattr(importlib.import_module("queries.engine"), "DatabaseTimeout", None)
    if timeout_cls is not None and isinstance(exc, timeout_cls):
        return True
    try:
        import psycopg

        if isinstance(orig, psycopg.errors.QueryCanceled):
            return True
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return "statement timeout" in text.lower()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
