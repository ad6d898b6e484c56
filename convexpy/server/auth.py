"""Who sent a request: the admin, a user, or nobody.

``Authorization: Convex <admin key>`` is the admin: trusted, so internal
functions are reachable too. ``Authorization: Bearer <JWT>`` is a user whose
identity the app's :class:`~convexpy.auth.TokenVerifier` vouches for (its
signature, issuer, audience and times checked against ``auth_config.py``);
a token it refuses is a 401 saying why. No header is an anonymous user.
Anything else is refused with a :class:`~convexpy.server.wire.RequestError`
(401).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from ..auth import AuthenticationError
from ..context import UserIdentity
from .wire import RequestError

__all__ = ["Caller", "request_caller", "require_admin"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the admin (trusted) or a user with an optional identity."""

    trusted: bool
    identity: UserIdentity | None


_ANONYMOUS = Caller(trusted=False, identity=None)
_ADMIN = Caller(trusted=True, identity=None)

Verify = Callable[[str], Awaitable[UserIdentity]]
"""A bearer token's identity, or :class:`~convexpy.auth.AuthenticationError`."""


def _header_caller(request: Request, admin_key: str | None) -> Caller | str:
    """The caller the ``Authorization`` header names, or the bearer token to verify."""
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
        return credential
    raise RequestError(
        401,
        "InvalidAuthHeader",
        "The Authorization header must be `Bearer <JWT>` or `Convex <admin key>`",
    )


async def request_caller(request: Request, admin_key: str | None, verify: Verify) -> Caller:
    """Who sent ``request``, from its ``Authorization`` header (see the module docstring).

    Raises :class:`RequestError` (401) for a wrong admin key, a refused
    bearer token or a header that is neither scheme.
    """
    caller = _header_caller(request, admin_key)
    if isinstance(caller, Caller):
        return caller
    try:
        return Caller(trusted=False, identity=await verify(caller))
    except AuthenticationError as exc:
        raise RequestError(401, exc.code, exc.message) from None


def require_admin(request: Request, admin_key: str | None) -> None:
    """Raise :class:`RequestError` (401) unless ``request`` carries the admin key."""
    if request.headers.get("authorization") is None:
        raise RequestError(
            401,
            "MissingAdminKey",
            "This endpoint needs the header `Authorization: Convex <admin key>` "
            "(the dev server prints the key and stores it in .convexpy/admin_key)",
        )
    caller = _header_caller(request, admin_key)
    if not (isinstance(caller, Caller) and caller.trusted):
        raise RequestError(
            401, "BadAdminKey", "The provided admin key was invalid for this instance"
        )
