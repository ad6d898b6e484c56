"""``auth_config.py``: which issuers' tokens an app accepts (Convex's ``auth.config.ts``).

Pure: :func:`parse_auth_config` turns the module's ``providers`` list into an
:class:`AuthConfig` of :class:`OidcProvider` and :class:`CustomJwtProvider`,
or raises :class:`AuthConfigError` naming the entry and the field. A JWKS
given inline, as a ``data:`` URI or as a file is read here (the loader runs
this on its import thread), so a bad key set is refused with the config;
only JWKS URLs are fetched later, by :mod:`convexpy.auth.keys`.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConvexpyError

__all__ = [
    "ALGORITHMS",
    "AuthConfig",
    "AuthConfigError",
    "CustomJwtProvider",
    "OidcProvider",
    "Provider",
    "jwks_problem",
    "parse_auth_config",
]

ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""Signature algorithms a provider may name: public-key ones only (never ``none``
or the HMAC family, whose "public" key would be a shared secret)."""

OIDC_DEFAULT_ALGORITHM = "RS256"
"""What OIDC providers sign with unless their entry says otherwise (as in Convex)."""


class AuthConfigError(ConvexpyError, ValueError):
    """``auth_config.py`` is malformed; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """``{"domain": issuer_url, "applicationID": audience}``: keys from the issuer's
    ``/.well-known/openid-configuration`` -> ``jwks_uri``."""

    domain: str
    application_id: str
    algorithm: str = OIDC_DEFAULT_ALGORITHM

    @property
    def issuer(self) -> str:
        return self.domain

    @property
    def label(self) -> str:
        return f"OIDC provider {self.domain}"

    def matches_issuer(self, iss: str) -> bool:
        # Identity providers disagree on a trailing slash (Auth0's tokens have
        # one, its docs' domains do not); Convex ignores it too.
        return iss.rstrip("/") == self.domain.rstrip("/")

    @property
    def discovery_url(self) -> str:
        return self.domain.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class CustomJwtProvider:
    """``{"type": "customJwt", "issuer", "jwks", "algorithm", "applicationID"?}``.

    ``jwks_url`` is set when the keys are fetched over HTTP; otherwise
    ``jwks`` holds the key set (inline, from a ``data:`` URI or a file).
    """

    issuer: str
    algorithm: str
    application_id: str | None
    jwks_url: str | None
    jwks: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"customJwt provider {self.issuer}"

    def matches_issuer(self, iss: str) -> bool:
        return iss == self.issuer


Provider = OidcProvider | CustomJwtProvider


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The providers of an app's ``auth_config.py``, in order."""

    providers: tuple[Provider, ...]


_OIDC_FIELDS = {"domain", "applicationID", "algorithm"}
_CUSTOM_FIELDS = {"type", "issuer", "jwks", "algorithm", "applicationID"}


def parse_auth_config(providers: object, *, base_dir: Path) -> AuthConfig:
    """The :class:`AuthConfig` that ``providers`` (the module's list) describes.

    A relative JWKS file path is read relative to ``base_dir`` (the app directory).
    Raises :class:`AuthConfigError` naming the entry (``providers[1]``) and field.
    """
    if not isinstance(providers, list | tuple):
        raise AuthConfigError(
            f"`providers` must be a list of provider dicts, got {type(providers).__name__}"
        )
    parsed: list[Provider] = []
    for index, entry in enumerate(providers):
        where = f"providers[{index}]"
        if not isinstance(entry, dict):
            raise AuthConfigError(f"{where} must be a dict, got {type(entry).__name__}")
        if "type" in entry:
            if entry["type"] != "customJwt":
                raise AuthConfigError(
                    f"{where}: `type` must be 'customJwt' (or leave it out for an OIDC "
                    f"provider with `domain`), got {entry['type']!r}"
                )
            parsed.append(_custom(entry, where, base_dir))
        else:
            parsed.append(_oidc(entry, where))
    return AuthConfig(tuple(parsed))


def _unknown_fields(entry: dict[str, Any], allowed: set[str], where: str, kind: str) -> None:
    unknown = sorted(str(key) for key in entry if key not in allowed)
    if unknown:
        raise AuthConfigError(
            f"{where}: unknown field {unknown[0]!r} for {kind} (allowed: "
            f"{', '.join(sorted(allowed))})"
        )


def _text(entry: dict[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        got = "nothing" if value is None else repr(value)
        raise AuthConfigError(f"{where}: `{name}` must be a non-empty string, got {got}")
    return value


def _url(entry: dict[str, Any], name: str, where: str) -> str:
    value = _text(entry, name, where)
    assert value is not None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthConfigError(
            f"{where}: `{name}` must be an http(s) URL such as 'https://auth.example.com', "
            f"got {value!r}"
        )
    return value


def _algorithm(entry: dict[str, Any], where: str, default: str | None) -> str:
    value = entry.get("algorithm", default)
    if value not in ALGORITHMS:
        got = "nothing" if value is None else repr(value)
        raise AuthConfigError(
            f"{where}: `algorithm` must be one of {', '.join(ALGORITHMS)}, got {got}"
        )
    return str(value)


def _oidc(entry: dict[str, Any], where: str) -> OidcProvider:
    if "domain" not in entry and "issuer" in entry:
        raise AuthConfigError(
            f'{where}: an entry with `issuer` needs `"type": "customJwt"` (and `jwks`, '
            '`algorithm`); an OIDC provider is `{"domain": ..., "applicationID": ...}`'
        )
    _unknown_fields(entry, _OIDC_FIELDS, where, "an OIDC provider")
    domain = _url(entry, "domain", where)
    application_id = _text(entry, "applicationID", where)
    assert application_id is not None
    algorithm = _algorithm(entry, where, OIDC_DEFAULT_ALGORITHM)
    return OidcProvider(domain, application_id, algorithm)


def _custom(entry: dict[str, Any], where: str, base_dir: Path) -> CustomJwtProvider:
    where = f"{where} (customJwt)"
    _unknown_fields(entry, _CUSTOM_FIELDS, where, "a customJwt provider")
    issuer = _text(entry, "issuer", where)
    assert issuer is not None
    application_id = _text(entry, "applicationID", where, required=False)
    algorithm = _algorithm(entry, where, None)
    jwks = entry.get("jwks")
    if isinstance(jwks, dict):
        return CustomJwtProvider(
            issuer, algorithm, application_id, None, check_jwks(jwks, f"{where}: `jwks`")
        )
    if not isinstance(jwks, str) or not jwks.strip():
        got = "nothing" if jwks is None else type(jwks).__name__
        raise AuthConfigError(
            f"{where}: `jwks` must be a URL, a data: URI, a file path or a JWKS dict "
            f"({{'keys': [...]}}), got {got}"
        )
    if jwks.startswith(("http://", "https://")):
        _url(entry, "jwks", where)
        return CustomJwtProvider(issuer, algorithm, application_id, jwks, None)
    if jwks.startswith("data:"):
        document = _data_uri(jwks, f"{where}: `jwks`")
    else:
        path = base_dir / Path(jwks).expanduser()
        try:
            document = path.read_bytes()
        except OSError as exc:
            raise AuthConfigError(
                f"{where}: `jwks` names the file {str(path)!r}, which cannot be read "
                f"({exc.strerror or exc})"
            ) from None
        where = f"{where}: `jwks` file {str(path)!r}"
    keys = check_jwks(_json(document, where), where)
    return CustomJwtProvider(issuer, algorithm, application_id, None, keys)


def _data_uri(uri: str, where: str) -> bytes:
    header, comma, payload = uri[len("data:") :].partition(",")
    if not comma:
        raise AuthConfigError(f"{where}: a data: URI needs a ',' before its content")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(urllib.parse.unquote(payload), validate=True)
        except (binascii.Error, ValueError):
            raise AuthConfigError(f"{where}: the data: URI's base64 content is invalid") from None
    return urllib.parse.unquote_to_bytes(payload)


def _json(document: bytes, where: str) -> object:
    try:
        return json.loads(document)
    except (ValueError, RecursionError) as exc:
        raise AuthConfigError(f"{where}: not valid JSON ({exc})") from None


def check_jwks(document: object, where: str) -> dict[str, Any]:
    """``document`` if it is a JWKS, else :class:`AuthConfigError` saying why."""
    problem = jwks_problem(document)
    if problem is not None:
        raise AuthConfigError(f"{where}: {problem}")
    assert isinstance(document, dict)
    return document


def jwks_problem(document: object) -> str | None:
    """Why ``document`` is not a JWKS (``{"keys": [JWK objects]}``), or None."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return "a JWKS must be a JSON object with a `keys` list"
    for index, key in enumerate(document["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            return f"keys[{index}] must be a JWK object with `kty`"
    return None
