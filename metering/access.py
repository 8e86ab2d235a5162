"""Who may see and change what: roles, memberships and the org scope of a principal.

A membership is (user_id, org, role). ``org = "*"`` is a platform membership: the role holds in
every org (a platform admin may also load rate cards, which are platform-wide). Roles are
ordered: viewer (read) < finance (read + budgets) < admin (rate cards, memberships).

The scope of a principal is what every query receives: a concrete frozenset of orgs, or
``None`` meaning "every org" (the local demo user and platform-wide roles). ``None`` is only
resolved to a concrete list by ``queries.filters.known_orgs``; every other query refuses it.
This module never imports streamlit: the app and the CLI share it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

PLATFORM = "*"
USER_ID_MAX = 200
ORG_MAX = 63
_ORG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class AccessDenied(PermissionError):
    """The principal lacks the role this action needs; the message names org and role."""


class Role(IntEnum):
    VIEWER = 1
    FINANCE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {value!r}: expected one of viewer, finance, admin") from None


ROLE_NAMES = tuple(r.label for r in Role)


def check_user_id(user_id: str) -> str:
    """A user id as stored: stripped, non-empty, at most 200 printable characters; emails lowercase
    (the app compares signed-in emails lowercase, so the CLI and the Access page store them so too)."""
    if not isinstance(user_id, str):
        raise ValueError("user_id must be a string")
    uid = user_id.strip()
    if not uid or len(uid) > USER_ID_MAX or not uid.isprintable():
        raise ValueError(f"user_id {user_id[:40]!r} must be 1-{USER_ID_MAX} printable characters")
    return uid.lower() if "@" in uid else uid


def check_org_name(org: str, *, allow_platform: bool = True) -> str:
    """An org slug (lowercase letters, digits, '-') or '*' for a platform membership."""
    if allow_platform and org == PLATFORM:
        return org
    if not isinstance(org, str) or not _ORG_RE.match(org):
        raise ValueError(f"org {str(org)[:40]!r} is not a valid org slug (a-z, 0-9, '-', at most {ORG_MAX})")
    return org


@dataclass(frozen=True)
class Principal:
    """A signed-in user (app) or the caller of the CLI.

    ``roles`` maps org (or ``"*"``) to Role; ``None`` is the local single-user mode: every org, admin.
    """

    user_id: str
    display: str
    mode: str  # "local" | "oidc" | "proxy" | "cli"
    roles: Mapping[str, Role] | None = field(default=None)

    @property
    def is_local(self) -> bool:
        return self.roles is None

    def platform_role(self) -> Role | None:
        if self.roles is None:
            return Role.ADMIN
        return self.roles.get(PLATFORM)

    def role_in(self, org: str) -> Role | None:
        """The effective role in ``org`` (the higher of the org and platform memberships)."""
        if self.roles is None:
            return Role.ADMIN
        found = [r for r in (self.roles.get(org), self.roles.get(PLATFORM)) if r is not None]
        return max(found) if found else None

    def can(self, org: str, at_least: Role = Role.VIEWER) -> bool:
        role = self.role_in(org)
        return role is not None and role >= at_least

    def require(self, org: str, at_least: Role) -> None:
        if not self.can(org, at_least):
            have = self.role_in(org)
            raise AccessDenied(
                f"{self.user_id} needs the {at_least.label} role in org {org!r}"
                + (f" (has {have.label})" if have else " (not a member)")
            )

    def require_platform(self, at_least: Role = Role.ADMIN) -> None:
        role = self.platform_role()
        if role is None or role < at_least:
            raise AccessDenied(f"{self.user_id} needs the platform {at_least.label} role ('*' membership)")

    def orgs_with(self, at_least: Role, known: Collection[str]) -> list[str]:
        """Concrete orgs among ``known`` where the principal has at least ``at_least``."""
        scope = self.scope(at_least)
        return sorted(known) if scope is None else sorted(o for o in known if o in scope)

    def admin_orgs(self, known: Collection[str]) -> list[str]:
        """Orgs whose memberships the principal may list and change: ``known`` resolves "every org";
        ``"*"`` is added for platform admins (platform memberships)."""
        scope = self.scope(Role.ADMIN)
        orgs = sorted(known) if scope is None else sorted(scope)
        return [*orgs, PLATFORM] if self.platform_role() == Role.ADMIN else orgs

    def scope(self, at_least: Role = Role.VIEWER) -> frozenset[str] | None:
        """Orgs where the principal has at least ``at_least``; None = every org."""
        platform = self.platform_role()
        if platform is not None and platform >= at_least:
            return None
        assert self.roles is not None
        return frozenset(o for o, r in self.roles.items() if o != PLATFORM and r >= at_least)


def principal_from_memberships(user_id: str, display: str, mode: str,
                               memberships: Mapping[str, str]) -> Principal:
    """Build a principal from stored memberships (org -> role name); unknown role names are ignored."""
    roles: dict[str, Role] = {}
    for org, name in memberships.items():
        try:
            roles[org] = Role.parse(name)
        except ValueError:
            continue
    return Principal(check_user_id(user_id), display or user_id, mode, roles)


LOCAL_USER = Principal("local", "Local demo user", "local", None)
