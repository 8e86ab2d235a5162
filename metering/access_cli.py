"""The CLI's identity and the `access list|grant|revoke` command.

``resolve_principal`` turns ``--user`` into a principal (the operator when no user is given);
command modules check it with ``require_org``, ``require_platform`` and ``scope_of``. A user
asking for an org outside their memberships gets "no access to org X", the same message
whether or not the org exists, so the CLI never reveals which orgs exist.
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from metering.access import (
    PLATFORM,
    AccessDenied,
    Principal,
    Role,
    check_org_name,
    check_user_id,
    principal_from_memberships,
)

OPERATOR = Principal("operator", "database operator", "cli", None)
"""No ``--user``: whoever holds the database credentials; every org, every action."""

EXIT_OK = 0
EXIT_USAGE = 2


def resolve_principal(engine: sa.Engine, user: str | None) -> Principal:
    """The operator for no user; else the user's memberships (none stored: no access at all)."""
    if user is None:
        return OPERATOR
    from queries.access import memberships_of
    from queries.schema import memberships

    try:
        uid = check_user_id(user)
    except ValueError as exc:
        raise AccessDenied(f"--user: {exc}") from None
    if not sa.inspect(engine).has_table(memberships.name):
        return principal_from_memberships(uid, uid, "cli", {})  # no schema yet: no memberships
    return principal_from_memberships(uid, uid, "cli", memberships_of(engine, uid))


def principal_of(args) -> Principal:
    return getattr(args, "principal", None) or OPERATOR


def no_access(org: str) -> AccessDenied:
    return AccessDenied(f"no access to org {org!r}")


def require_org(args, org: str, at_least: Role = Role.VIEWER) -> None:
    """Refuse unless the principal holds ``at_least`` in ``org``. An org the principal cannot
    even view (foreign or nonexistent) gets the same "no access" message either way."""
    p = principal_of(args)
    if not p.can(org, Role.VIEWER):
        raise no_access(org)
    p.require(org, at_least)


def require_platform(args, at_least: Role = Role.ADMIN) -> None:
    principal_of(args).require_platform(at_least)


def scope_of(args, at_least: Role = Role.VIEWER) -> frozenset[str] | None:
    """Orgs the principal may see with ``at_least`` (None: every org, operator/platform role)."""
    return principal_of(args).scope(at_least)


# ---------------------------------------------------------------------------------------------
# `access list|grant|revoke`


def register(sub) -> None:
    p = sub.add_parser(
        "access", help="list, grant or revoke org memberships",
        description="Memberships: (user, org, role), roles viewer < finance < admin; org '*' is a "
        "platform membership. As the operator (no --user) anything goes; with --user the caller "
        "needs admin in the org (platform admin for '*').",
    )
    asub = p.add_subparsers(dest="access_command", required=True, metavar="ACTION")
    q = asub.add_parser("list", help="list memberships (of the orgs the caller administers)")
    q.add_argument("--org", default=None, help="only this org ('*' for platform memberships)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_list)
    q = asub.add_parser("grant", help="give USER the ROLE in ORG (or change their role)")
    q.add_argument("user_id", metavar="USER")
    q.add_argument("org", metavar="ORG", help="org slug, or '*' for a platform membership")
    q.add_argument("role", metavar="ROLE", help="viewer, finance or admin")
    q.set_defaults(func=_cmd_grant)
    q = asub.add_parser("revoke", help="remove USER's membership in ORG")
    q.add_argument("user_id", metavar="USER")
    q.add_argument("org", metavar="ORG")
    q.set_defaults(func=_cmd_revoke)


def _admin_orgs(engine: sa.Engine, args) -> set[str]:
    """Orgs whose memberships the caller may list and change ('*' included for platform admins)."""
    from queries.access import membership_orgs

    return set(principal_of(args).admin_orgs(membership_orgs(engine)))


def _require_admin_of(args, org: str) -> None:
    if org == PLATFORM:
        require_platform(args, Role.ADMIN)
    else:
        require_org(args, org, Role.ADMIN)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_list(args, engine: sa.Engine) -> int:
    from metering.jsonout import dumps
    from queries.access import list_memberships
    from queries.engine import upgrade

    if principal_of(args).is_local:
        upgrade(engine)
    if args.org is not None:
        try:
            org = check_org_name(args.org)
        except ValueError as exc:
            return _fail(str(exc))
        _require_admin_of(args, org)
        orgs = {org}
    else:
        orgs = _admin_orgs(engine, args)
    rows = list_memberships(engine, orgs).to_dicts()
    if args.json:
        print(dumps(rows))
    elif not rows:
        print("no memberships")
    else:
        for r in rows:
            print(f"{r['org']:<24} {r['user_id']:<32} {r['role']}")
    return EXIT_OK


def _cmd_grant(args, engine: sa.Engine) -> int:
    from queries.access import grant
    from queries.engine import upgrade

    try:
        uid = check_user_id(args.user_id)
        org = check_org_name(args.org)
        role = Role.parse(args.role)
    except ValueError as exc:
        return _fail(str(exc))
    _require_admin_of(args, org)
    if principal_of(args).is_local:
        upgrade(engine)
    grant(engine, {org}, uid, org, role)
    print(f"granted {role.label} in {org} to {uid}")
    return EXIT_OK


def _cmd_revoke(args, engine: sa.Engine) -> int:
    from queries.access import revoke

    try:
        uid = check_user_id(args.user_id)
        org = check_org_name(args.org)
    except ValueError as exc:
        return _fail(str(exc))
    _require_admin_of(args, org)
    if not revoke(engine, {org}, uid, org):
        return _fail(f"{uid} has no membership in {org}")
    print(f"revoked {uid}'s membership in {org}")
    return EXIT_OK


__all__ = [
    "OPERATOR", "no_access", "principal_of", "register", "require_org", "require_platform",
    "resolve_principal", "scope_of",
]
