"""API tokens in the job database: created with a role, shown once, stored as a hash,
revoked by name. The secrets are 256 random bits, so one SHA-256 (no salt, no stretching)
is what a stored hash needs: there is no password to guess behind it."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from journal.errors import ConfigError
from journal.jobs.database import JobDatabase
from journal.jobs.models import ROLES, ApiToken, utcnow

PREFIX = "ejt_"  # recognisable in a leaked log or a secret scanner
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: the token's name and role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def started_by(self) -> str:
        return f"api:{self.name}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(db: JobDatabase, name: str, role: str, created_by: str) -> str:
    """A new token's secret (the only time it exists outside the caller)."""
    if not _NAME.match(name):
        raise ConfigError(f"token name {name!r}: letters, digits and _ . @ - only, at most "
                          "100 characters")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
    secret = PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        if session.scalars(select(ApiToken).where(ApiToken.name == name)).first():
            raise ConfigError(f"a token named {name!r} exists: revoke it first, or choose "
                              "another name")
        session.add(ApiToken(name=name, role=role, secret_sha256=digest(secret),
                             created_at=utcnow(), created_by=created_by))
    return secret


def revoke(db: JobDatabase, name: str) -> None:
    """Revoke the token (it stays listed, revoked, so the audit trail's names resolve)."""
    with db.session() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
        if token is None:
            raise ConfigError(f"no token named {name!r}")
        if token.revoked_at is None:
            token.revoked_at = utcnow()


def authenticate(db: JobDatabase, secret: str) -> Caller | None:
    """The caller a secret belongs to; None for an unknown or revoked token."""
    if not secret.startswith(PREFIX):
        return None
    return authenticate_digest(db, digest(secret))


def authenticate_digest(db: JobDatabase, secret_sha256: str) -> Caller | None:
    with db.session() as session:
        token = session.scalars(select(ApiToken)
                                .where(ApiToken.secret_sha256 == secret_sha256)).first()
        if token is None or token.revoked_at is not None:
            return None
        return Caller(token.name, token.role)


def listed(db: JobDatabase) -> list[ApiToken]:
    with db.session() as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
