"""`init-roles`: PostgreSQL least-privilege roles (reader, writer) and optional row-level security.

Runs as the schema owner (the URL `init-db` uses). The work is in ``queries.roles.setup_roles``;
this module only parses arguments and prints the outcome. See docs/security.md.
"""

from __future__ import annotations

import sys

from queries.roles import READER, WRITER, RoleSetupError, setup_roles

EXIT_OK = 0
EXIT_USAGE = 2


def register(sub) -> None:
    p = sub.add_parser(
        "init-roles", help="create/refresh the PostgreSQL reader and writer roles (least privilege)",
        description=f"Create or refresh the NOLOGIN group roles {READER} (SELECT only) and {WRITER} "
        "(SELECT/INSERT/UPDATE/DELETE, no DDL, no TRUNCATE) on the app tables; idempotent, re-run "
        "after each migration. --rls adds per-org row-level security for the reader. PostgreSQL "
        "only; run with the owner's URL.",
    )
    rls = p.add_mutually_exclusive_group()
    rls.add_argument("--rls", dest="rls", action="store_const", const=True, default=None,
                     help="enable row-level security by org on the org tables (reader sees only "
                     "the orgs of the transaction's metering.orgs setting; none without it)")
    rls.add_argument("--no-rls", dest="rls", action="store_const", const=False,
                     help="disable row-level security on the org tables (default: leave as is)")
    p.add_argument("--reader-login", action="append", default=[], metavar="NAME",
                   help="create (or reuse) LOGIN role NAME as a member of the reader role (repeatable)")
    p.add_argument("--writer-login", action="append", default=[], metavar="NAME",
                   help="create (or reuse) LOGIN role NAME as a member of the writer role (repeatable; "
                   "gets BYPASSRLS while RLS is on, which needs a superuser)")
    p.add_argument("--reader-role", default=READER, metavar="NAME",
                   help=f"group role name (default {READER})")
    p.add_argument("--writer-role", default=WRITER, metavar="NAME",
                   help=f"group role name (default {WRITER})")
    p.set_defaults(func=_cmd_init_roles)


def _cmd_init_roles(args, engine, *, out=print) -> int:
    from metering.access_cli import require_platform

    require_platform(args)
    if engine.dialect.name != "postgresql":
        print(f"error: init-roles needs PostgreSQL; {engine.dialect.name} has no database roles "
              "(protect the SQLite file with file permissions instead)", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = setup_roles(
            engine, reader=args.reader_role, writer=args.writer_role, rls=args.rls,
            reader_logins=tuple(args.reader_login), writer_logins=tuple(args.writer_login),
        )
    except RoleSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    created = f" (created {', '.join(report.created)})" if report.created else ""
    out(f"roles {report.reader} (read) and {report.writer} (write) on database {report.database}, "
        f"schema {report.schema}{created}: {len(report.tables)} tables granted")
    if report.rls is True:
        out(f"row-level security by org ON for {', '.join(report.rls_tables)}")
    elif report.rls is False:
        out("row-level security OFF on the org tables")
    else:
        out("row-level security left as it was (use --rls or --no-rls to change it)")
    for login in report.logins:
        out(f"login {login}")
    for warning in report.warnings:
        out(f"warning: {warning}")
    return EXIT_OK
