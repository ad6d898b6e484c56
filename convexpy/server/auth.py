"""Who sent a request: the admin, a user, or nobody.

``Authorization: Convex <admin key>`` is the admin: trusted, so internal
functions are reachable too. ``Authorization: Bearer <JWT>`` is a user whose
identity :func:`identity_from_jwt` reads from the token's claims, **for
development only**: the signature is not checked. No header is an anonymous
user. Anything else is refused with a :class:`~convexpy.server.wire.RequestError`
(401).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass

from starlette.requests import Request

from ..context import UserIdentity
from .wire import RequestError

__all__ = ["Caller", "identity_from_jwt", "request_caller", "require_admin"]

# Registered JWT claims, which are not user attributes.
_JWT_REGISTERED = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the admin (trusted) or a user with an optional identity."""

    trusted: bool
    identity: UserIdentity | None


_ANONYMOUS = Caller(trusted=False, identity=None)
_ADMIN = Caller(trusted=True, identity=None)


def request_caller(request: Request, admin_key: str | None) -> Caller:
    """Who sent ``request``, from its ``Authorization`` header (see the module docstring).

    Raises :class:`RequestError` (401) for a wrong admin key or a header that is
    neither scheme.
    """
    header = request.headers.get("authorization")
    if header is None:
        return _ANONYMOUS
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() == "convex":
        if (
            admin_key
            and credential
            and hmac.compare_digest(credential.encode(), admin_key.encode())
        ):
            return _ADMIN
        raise RequestError(
            401, "BadAdminKey", "The provided admin key was invalid for this instance"
        )
    if scheme.lower() == "bearer" and credential:
        return Caller(trusted=False, identity=identity_from_jwt(credential))
    raise RequestError(
        401,
        "InvalidAuthHeader",
        "The Authorization header must be `Bearer <JWT>` or `Convex <admin key>`",
    )


def require_admin(request: Request, admin_key: str | None) -> None:
    """Raise :class:`RequestError` (401) unless ``request`` carries the admin key."""
    if request.headers.get("authorization") is None:
        raise RequestError(
            401,
            "MissingAdminKey",
            "This endpoint needs the header `Authorization: Convex <admin key>` "
            "(the dev server prints the key and stores it in .convexpy/admin_key)",
        )
    if not request_caller(request, admin_key).trusted:
        raise RequestError(
            401, "BadAdminKey", "The provided admin key was invalid for this instance"
        )


def identity_from_jwt(token: str) -> UserIdentity:
    """The identity a JWT's claims describe. DEVELOPMENT ONLY: the signature is not checked.

    Raises :class:`RequestError` (401 ``InvalidAuthHeader``) for anything that
    is not a JWT with string ``sub`` and ``iss`` claims.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise RequestError(
            401,
            "InvalidAuthHeader",
            "Could not parse the bearer token as a JWT (expected three base64url parts "
            "separated by '.')",
        )
    try:
        segment = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(segment.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError, RecursionError):
        raise RequestError(
            401, "InvalidAuthHeader", "Could not parse the bearer token's payload as JSON"
        ) from None
    if not isinstance(payload, dict):
        raise RequestError(401, "InvalidAuthHeader", "The JWT payload is not a JSON object")
    subject, issuer = payload.get("sub"), payload.get("iss")
    if not isinstance(subject, str) or not subject or not isinstance(issuer, str) or not issuer:
        raise RequestError(
            401, "InvalidAuthHeader", "The JWT must have string `sub` and `iss` claims"
        )

    def text(name: str) -> str | None:
        value = payload.get(name)
        return value if isinstance(value, str) else None

    verified = payload.get("email_verified")
    known = {"name", "email", "email_verified", "picture"}
    claims = {k: v for k, v in payload.items() if k not in _JWT_REGISTERED and k not in known}
    return UserIdentity(
        subject=subject,
        issuer=issuer,
        name=text("name"),
        email=text("email"),
        email_verified=verified if isinstance(verified, bool) else None,
        picture_url=text("picture"),
        claims=claims,
    )
