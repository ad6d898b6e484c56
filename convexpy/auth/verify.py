"""Bearer tokens in, verified identities out.

:meth:`TokenVerifier.identity` is the one entry point: the HTTP API calls
it for ``Authorization: Bearer <token>``, and the websocket sync protocol
for a ``User`` token in an ``Authenticate`` message, the same way. A token is accepted
only when a provider of the app's ``auth_config.py`` vouches for it:

1. it parses as a JWT (else ``InvalidAuthHeader``);
2. a provider's issuer matches its ``iss`` (else ``NoAuthProvider``; also
   when the app has no ``auth_config.py``);
3. its header's ``alg`` is the provider's configured algorithm, never the
   token's own choice (``WrongAlgorithm``: ``none`` and HS256 land here);
4. the provider's key set has its ``kid`` (fetched keys are refreshed once
   when it does not: ``UnknownKey``; keys that cannot be fetched within the
   timeout: ``KeysUnavailable``);
5. the signature checks out with that key (``InvalidSignature``, by PyJWT);
6. ``aud`` includes the provider's ``applicationID`` when it has one
   (``WrongAudience``);
7. ``exp`` is present and not past, ``nbf`` not ahead, ``iat`` not in the
   future, each with :data:`DEFAULT_LEEWAY_S` of leeway (``TokenExpired``,
   ``TokenNotYetValid``).

Every refusal is an :class:`AuthenticationError` with a ``code`` and a
message saying what failed; the HTTP API answers it 401 ``{code, message}``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
from collections.abc import Callable
from typing import Any

import jwt

from ..clock import SystemClock
from ..context import UserIdentity
from ..errors import ConvexpyError
from .config import AuthConfig, CustomJwtProvider, OidcProvider, Provider, jwks_problem
from .keys import KeyFetcher, KeyFetchError

__all__ = ["DEFAULT_LEEWAY_S", "AuthenticationError", "TokenVerifier", "identity_from_claims"]

DEFAULT_LEEWAY_S = 60.0
"""Seconds of clock skew tolerated between the issuer and this server for
``exp``, ``nbf`` and ``iat``."""

_REGISTERED = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "nonce"})
"""JWT claims that say how the token may be used, not who the user is."""

_TEXT_CLAIMS = {
    "name": "name",
    "given_name": "given_name",
    "family_name": "family_name",
    "nickname": "nickname",
    "preferred_username": "preferred_username",
    "profile": "profile_url",
    "picture": "picture_url",
    "email": "email",
    "gender": "gender",
    "birthdate": "birthday",
    "zoneinfo": "timezone",
    "locale": "language",
    "phone_number": "phone_number",
}
"""OIDC standard claims (snake case in the token) -> :class:`UserIdentity` fields,
as Convex maps them to its camel-case ``UserIdentity`` (``picture`` -> ``pictureUrl``)."""

_BOOL_CLAIMS = {
    "email_verified": "email_verified",
    "phone_number_verified": "phone_number_verified",
}
_PROFILE = frozenset({*_TEXT_CLAIMS, *_BOOL_CLAIMS, "address", "updated_at"})


class AuthenticationError(ConvexpyError, PermissionError):
    """A bearer token was refused: ``code`` names the failure, the message explains it."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def _system_seconds() -> float:
    return SystemClock().now() / 1000


def _malformed(what: str) -> AuthenticationError:
    return AuthenticationError("InvalidAuthHeader", f"The bearer token is not a valid JWT: {what}")


def _when(seconds: float) -> str:
    """``seconds`` since the epoch in ISO 8601 (UTC), or as a number if out of range."""
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} s after the epoch"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class TokenVerifier:
    """Checks bearer tokens against an app's :class:`~convexpy.auth.config.AuthConfig`.

    Entry point: ``await verifier.identity(token, config)`` returns the
    :class:`~convexpy.context.UserIdentity` of a verified token or raises
    :class:`AuthenticationError` (see the module docstring for the checks).
    ``config`` is the current app's (``runtime.app.auth_config``, None
    without ``auth_config.py``), passed on every call so that a reload takes
    effect at once; the fetched keys are cached here, by URL, across reloads.

    ``clock`` gives the time in seconds (default: the system clock).
    ``fetch_timeout``, ``max_age`` and ``refresh_interval`` govern fetched
    keys (see :class:`~convexpy.auth.keys.KeyFetcher`). ``insecure_unverified``
    reads every token's claims WITHOUT checking anything but its shape: the
    dev server's ``--insecure-unverified-jwt``, for development only.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        leeway: float = DEFAULT_LEEWAY_S,
        fetch_timeout: float = 5.0,
        max_age: float = 600.0,
        refresh_interval: float = 30.0,
        insecure_unverified: bool = False,
    ) -> None:
        self.clock: Callable[[], float] = clock or _system_seconds
        self.leeway = leeway
        self.insecure_unverified = insecure_unverified
        self.keys = KeyFetcher(
            clock=self.clock,
            timeout=fetch_timeout,
            max_age=max_age,
            refresh_interval=refresh_interval,
        )

    async def identity(self, token: str, config: AuthConfig | None) -> UserIdentity:
        """The identity ``token`` proves, or :class:`AuthenticationError` (see the class)."""
        header, claims = _unverified(token)
        if self.insecure_unverified:
            return identity_from_claims(claims)
        if config is None:
            raise AuthenticationError(
                "NoAuthProvider",
                "Bearer tokens are refused: the app has no auth_config.py. Add one to the app "
                "directory with a `providers` list naming the issuers whose tokens to accept "
                "(see the README's Auth section)",
            )
        provider = _provider_for(config, claims)
        algorithm = header.get("alg")
        if algorithm != provider.algorithm:
            raise AuthenticationError(
                "WrongAlgorithm",
                f"The token is signed with {algorithm!r}, but the {provider.label} in "
                f"auth_config.py signs with {provider.algorithm}",
            )
        key = await self._key(provider, header.get("kid"))
        verified = self._check_signature(token, provider, key)
        self._check_times(verified)
        return identity_from_claims(verified)

    # -- keys ----------------------------------------------------------------------

    async def _key(self, provider: Provider, kid: object) -> Any:
        """The public key (a ``cryptography`` key object) that ``kid`` names."""
        if kid is not None and not isinstance(kid, str):
            raise _malformed("its header's `kid` is not a string")
        keys, source = await self._key_set(provider, refresh=False)
        jwk = _find(keys, kid)
        if jwk is None and source is not None:
            keys, source = await self._key_set(provider, refresh=True)
            jwk = _find(keys, kid)
        if jwk is None:
            named = "has no `kid` header and" if kid is None else f"names the key {kid!r}, which"
            where = "" if source is None else f" at {source}"
            known = sorted(str(k.get("kid")) for k in keys.get("keys", []) if "kid" in k)
            raise AuthenticationError(
                "UnknownKey",
                f"The token {named} is not among the keys of the {provider.label}{where} "
                f"(key ids: {', '.join(known) or 'none'})",
            )
        try:
            return jwt.PyJWK(jwk, algorithm=provider.algorithm).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise AuthenticationError(
                "UnknownKey",
                f"The key {kid!r} of the {provider.label} is not a usable "
                f"{provider.algorithm} public key: {exc}",
            ) from None

    async def _key_set(
        self, provider: Provider, *, refresh: bool
    ) -> tuple[dict[str, Any], str | None]:
        """The provider's JWKS and the URL it came from (None for a configured one)."""
        if isinstance(provider, CustomJwtProvider) and provider.jwks is not None:
            return provider.jwks, None
        try:
            if isinstance(provider, OidcProvider):
                discovery = await self.keys.get(provider.discovery_url, _discovery_problem)
                named = discovery.get("issuer")
                if isinstance(named, str) and named.rstrip("/") != provider.domain.rstrip("/"):
                    raise AuthenticationError(
                        "KeysUnavailable",
                        f"The OpenID configuration at {provider.discovery_url} names the issuer "
                        f"{named!r}, not the configured domain {provider.domain!r}, so its keys "
                        "are not used",
                    )
                url: str = discovery["jwks_uri"]
            else:
                assert provider.jwks_url is not None
                url = provider.jwks_url
            return await self.keys.get(url, jwks_problem, refresh=refresh), url
        except KeyFetchError as exc:
            raise AuthenticationError(
                "KeysUnavailable",
                f"The keys of the {provider.label} could not be fetched, so the token cannot "
                f"be verified: {exc}",
            ) from None

    # -- claims --------------------------------------------------------------------

    def _check_signature(self, token: str, provider: Provider, key: Any) -> dict[str, Any]:
        audience = provider.application_id
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[provider.algorithm],
                audience=audience,
                options={
                    "verify_aud": audience is not None,
                    "verify_iss": False,  # matched (slash-tolerantly) when choosing the provider
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp"],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError(
                "InvalidSignature",
                f"The token's signature does not match the key of the {provider.label}",
            ) from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "aud":
                raise _malformed(f"it has no `{exc.claim}` claim") from None
            raise AuthenticationError(
                "WrongAudience",
                f"The token's audience (`aud`: {_unverified(token)[1].get('aud')!r}) does "
                f"not include {audience!r}, the applicationID of the {provider.label}",
            ) from None
        except jwt.PyJWTError as exc:
            raise _malformed(str(exc)) from None
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now, leeway = self.clock(), self.leeway
        times: dict[str, float] = {}
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise _malformed(f"its `{name}` claim is not a number of seconds")
            times[name] = float(value)
        if now > times["exp"] + leeway:
            raise AuthenticationError(
                "TokenExpired",
                f"The token expired at {_when(times['exp'])} (`exp`; now {_when(now)}, "
                f"{leeway:g} s of leeway)",
            )
        for name, meaning in (("nbf", "is not valid before"), ("iat", "was issued at")):
            if name in times and times[name] > now + leeway:
                raise AuthenticationError(
                    "TokenNotYetValid",
                    f"The token {meaning} {_when(times[name])} (`{name}`), which is still "
                    f"ahead (now {_when(now)}, {leeway:g} s of leeway)",
                )


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of ``token``, unverified; ``sub`` and ``iss`` checked to be text."""
    parts = token.split(".")
    if len(parts) != 3:
        raise _malformed("expected three base64url parts separated by '.'")
    header = _segment(parts[0], "header")
    claims = _segment(parts[1], "payload")
    for name in ("sub", "iss"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise _malformed(f"it needs a string `{name}` claim")
    return header, claims


def _segment(text: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        raise _malformed(f"its {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise _malformed(f"its {what} is not a JSON object")
    return value


def _provider_for(config: AuthConfig, claims: dict[str, Any]) -> Provider:
    """The provider whose issuer matches ``iss`` (and whose applicationID is in
    ``aud``, when several match; the first of them otherwise)."""
    issuer = claims["iss"]
    matching = [p for p in config.providers if p.matches_issuer(issuer)]
    if not matching:
        listed = ", ".join(p.issuer for p in config.providers) or "no providers"
        raise AuthenticationError(
            "NoAuthProvider",
            f"No provider in auth_config.py accepts tokens issued by {issuer!r} (`iss`); it "
            f"lists {listed}",
        )
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    for provider in matching:
        if provider.application_id is None or provider.application_id in audiences:
            return provider
    return matching[0]


def _find(keys: dict[str, Any], kid: str | None) -> dict[str, Any] | None:
    """The key ``kid`` names in a JWKS (without a kid: the only signing key, if one)."""
    usable = [k for k in keys.get("keys", []) if k.get("use", "sig") == "sig"]
    if kid is None:
        return usable[0] if len(usable) == 1 else None
    return next((k for k in usable if k.get("kid") == kid), None)


def _discovery_problem(document: object) -> str | None:
    if not isinstance(document, dict):
        return "the OpenID configuration is not a JSON object"
    url = document.get("jwks_uri")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return "the OpenID configuration has no http(s) `jwks_uri`"
    return None


def identity_from_claims(claims: dict[str, Any]) -> UserIdentity:
    """The :class:`UserIdentity` a token's claims describe, mapped as Convex maps them.

    OIDC profile claims become fields (``picture`` -> ``picture_url``,
    ``birthdate`` -> ``birthday``, ``zoneinfo`` -> ``timezone``, ``locale`` ->
    ``language``; ``updated_at`` in seconds becomes an ISO 8601 string and an
    ``address`` object its ``formatted`` text). Every other claim lands in
    ``claims``, nested objects flattened to dotted names
    (``{"properties": {"id": 1}}`` -> ``"properties.id"``), as Convex does for
    custom claims. The registered claims (``exp``, ``aud``, ...) are left out.
    """
    fields: dict[str, Any] = {}
    for claim, name in _TEXT_CLAIMS.items():
        value = claims.get(claim)
        if isinstance(value, str):
            fields[name] = value
    for claim, name in _BOOL_CLAIMS.items():
        value = claims.get(claim)
        if isinstance(value, bool):
            fields[name] = value
    address = claims.get("address")
    if isinstance(address, dict):
        address = address.get("formatted")
    if isinstance(address, str):
        fields["address"] = address
    updated = claims.get("updated_at")
    if isinstance(updated, int | float) and not isinstance(updated, bool):
        fields["updated_at"] = _when(float(updated))
    elif isinstance(updated, str):
        fields["updated_at"] = updated
    custom: dict[str, Any] = {}
    for name, value in claims.items():
        if name not in _REGISTERED and name not in _PROFILE:
            _flatten(name, value, custom)
    return UserIdentity(subject=claims["sub"], issuer=claims["iss"], claims=custom, **fields)


_FLATTEN_DEPTH = 16


def _flatten(name: str, value: Any, into: dict[str, Any], depth: int = 0) -> None:
    if isinstance(value, dict) and value and depth < _FLATTEN_DEPTH:
        for key, inner in value.items():
            _flatten(f"{name}.{key}", inner, into, depth + 1)
    else:
        into[name] = value
