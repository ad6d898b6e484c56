"""Bearer tokens are trusted only when auth_config.py vouches for them.

Keys are made here, served by a real HTTP server on 127.0.0.1 (auth_helpers),
and tokens go through the real ASGI app. Time is a fake clock in seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from auth_helpers import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    Key,
    auth_config_source,
    claims,
    jwks,
    jwks_server,
)
from cryptography.hazmat.primitives import serialization
from e2e_helpers import SERVER_APP, free_port, write_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convexpy import Runtime
from convexpy.auth import (
    AuthConfigError,
    AuthenticationError,
    CustomJwtProvider,
    OidcProvider,
    TokenVerifier,
    identity_from_claims,
    parse_auth_config,
)
from convexpy.loader import AppLoadError
from convexpy.server import create_app
from convexpy.server.dev import DevOptions, _banner
from convexpy.server.logs import LogPrinter
from convexpy.server.process import server_config

T0 = 1_800_000_000.0
REFRESH_S = 30.0

ME = """
from convexpy import query


@query
async def me(ctx):
    identity = ctx.auth.get_user_identity()
    if identity is None:
        return None
    fields = {k: getattr(identity, k) for k in identity.__slots__ if k != "claims"}
    return {**{k: v for k, v in fields.items() if v is not None}, "claims": identity.claims}
"""


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key.rsa("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> Key:
    return Key.ec("ec-1")


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server() as state:
        yield state


@dataclass
class Api:
    http: httpx.AsyncClient
    runtime: Runtime
    clock: Clock
    app_dir: Path

    async def me(self, token: str | None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return await self.http.post(
            "/api/query", json={"path": "me:me", "args": {}}, headers=headers
        )

    async def identity(self, token: str) -> dict[str, Any]:
        response = await self.me(token)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: dict[str, Any] = body["value"]
        return result

    async def refused(self, token: str, code: str, *words: str) -> str:
        response = await self.me(token)
        assert response.status_code == 401, response.text
        body = response.json()
        assert body["code"] == code, body
        for word in words:
            assert word in body["message"], body
        message: str = body["message"]
        return message


@asynccontextmanager
async def open_api(
    app_dir: Path, providers: list[dict[str, Any]] | None, **verifier: Any
) -> AsyncIterator[Api]:
    """The app (SERVER_APP + me.py + auth_config.py unless ``providers`` is None)
    served in-process by the real ASGI app, with a verifier on a fake clock."""
    files = {**SERVER_APP, "me.py": ME}
    if providers is not None:
        files["auth_config.py"] = auth_config_source(providers)
    write_app(app_dir, files)
    clock = Clock()
    options = {"fetch_timeout": 5.0, "refresh_interval": REFRESH_S, **verifier}
    async with Runtime(app_dir, store="memory") as runtime:
        app = create_app(runtime, verifier=TokenVerifier(clock=clock, **options))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Api(http, runtime, clock, app_dir)


def custom(jwks_source: Any, algorithm: str = "RS256", **extra: Any) -> dict[str, Any]:
    return {
        "type": "customJwt",
        "issuer": ISSUER,
        "jwks": jwks_source,
        "algorithm": algorithm,
        "applicationID": AUDIENCE,
        **extra,
    }


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


# --------------------------------------------------------------------------
# A customJwt provider with keys at a URL


async def test_a_valid_token_becomes_the_identity(
    tmp_path: Path, server: JwksServer, rsa_key: Key
) -> None:
    server.documents["/jwks.json"] = jwks(rsa_key)
    async with open_api(tmp_path / "convex", [custom(server("/jwks.json"))]) as api:
        token = rsa_key.sign(
            claims(
                T0,
                name="Ada Lovelace",
                given_name="Ada",
                email="ada@example.com",
                email_verified=True,
                picture="https://example.com/ada.png",
                locale="en-GB",
                zoneinfo="Europe/London",
                birthdate="1815-12-10",
                updated_at=1_700_000_000,
                address={"formatted": "12 St James's Square"},
                org="analytical-engines",
                properties={"id": "123", "favorite": {"color": "green"}},
            )
        )
        me = await api.identity(token)
        assert me == {
            "subject": "user-1",
            "issuer": ISSUER,
            "token_identifier": f"{ISSUER}|user-1",
            "name": "Ada Lovelace",
            "given_name": "Ada",
            "email": "ada@example.com",
            "email_verified": True,
            "picture_url": "https://example.com/ada.png",
            "language": "en-GB",
            "timezone": "Europe/London",
            "birthday": "1815-12-10",
            "updated_at": "2023-11-14T22:13:20Z",
            "address": "12 St James's Square",
            "claims": {
                "org": "analytical-engines",
                "properties.id": "123",
                "properties.favorite.color": "green",
            },
        }
        # No token: anonymous, as before.
        assert (await api.me(None)).json()["value"] is None
        # The keys were fetched once and are cached.
        await api.identity(rsa_key.sign(claims(T0, sub="user-2")))
        assert server.hits["/jwks.json"] == 1


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"exp": T0 - 61}, "TokenExpired", ["expired", "leeway"]),
        ({"nbf": T0 + 61}, "TokenNotYetValid", ["not valid before", "nbf"]),
        ({"iat": T0 + 3600}, "TokenNotYetValid", ["issued at", "iat"]),
        ({"aud": "another-app"}, "WrongAudience", ["another-app", AUDIENCE]),
        ({"aud": None}, "WrongAudience", [AUDIENCE]),
        ({"iss": "https://evil.example"}, "NoAuthProvider", ["https://evil.example", ISSUER]),
        ({"exp": None}, "InvalidAuthHeader", ["exp"]),
        ({"exp": "tomorrow"}, "InvalidAuthHeader", ["exp"]),
        ({"sub": None}, "InvalidAuthHeader", ["sub"]),
        ({"exp": float("nan")}, "InvalidAuthHeader", ["exp"]),
        ({"nbf": float("inf")}, "InvalidAuthHeader", ["nbf"]),
        ({"exp": -1e300}, "TokenExpired", ["expired"]),
        ({"nbf": 1e300}, "TokenNotYetValid", ["1e+300"]),
    ],
)
async def test_claims_that_do_not_check_out_are_refused(
    tmp_path: Path,
    server: JwksServer,
    rsa_key: Key,
    change: dict[str, Any],
    code: str,
    words: list[str],
) -> None:
    server.documents["/jwks.json"] = jwks(rsa_key)
    payload = {k: v for k, v in {**claims(T0), **change}.items() if v is not None}
    async with open_api(tmp_path / "convex", [custom(server("/jwks.json"))]) as api:
        await api.refused(rsa_key.sign(payload), code, *words)


async def test_times_have_a_leeway_of_a_minute(
    tmp_path: Path, server: JwksServer, rsa_key: Key
) -> None:
    server.documents["/jwks.json"] = jwks(rsa_key)
    async with open_api(tmp_path / "convex", [custom(server("/jwks.json"))]) as api:
        await api.identity(rsa_key.sign(claims(T0, exp=T0 - 59, nbf=T0 + 59, iat=T0 + 59)))
        api.clock.now = T0 + 600 + 61
        await api.refused(rsa_key.sign(claims(T0)), "TokenExpired")


async def test_forged_tokens_are_refused(tmp_path: Path, server: JwksServer, rsa_key: Key) -> None:
    server.documents["/jwks.json"] = jwks(rsa_key)
    async with open_api(tmp_path / "convex", [custom(server("/jwks.json"))]) as api:
        good = rsa_key.sign(claims(T0))
        head, _, signature = good.split(".")
        # alg: none, with and without a signature.
        none = unsigned({"alg": "none", "kid": rsa_key.kid}, claims(T0))
        await api.refused(none + ".", "WrongAlgorithm", "'none'", "RS256")
        await api.refused(f"{none}.{signature}", "WrongAlgorithm", "'none'")
        # HS256 keyed with the provider's public key (the classic confusion attack).
        public_pem = rsa_key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = unsigned({"alg": "HS256", "kid": rsa_key.kid}, claims(T0))
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        await api.refused(f"{signing_input}.{b64(mac)}", "WrongAlgorithm", "'HS256'")
        # Another key that claims the provider's kid.
        impostor = Key.rsa(rsa_key.kid)
        await api.refused(impostor.sign(claims(T0)), "InvalidSignature", "signature")
        # Claims changed after signing.
        tampered = b64(json.dumps(claims(T0, sub="admin")).encode())
        await api.refused(f"{head}.{tampered}.{signature}", "InvalidSignature")
        # A kid the provider never had.
        await api.refused(Key.rsa("stranger").sign(claims(T0)), "UnknownKey", "'stranger'", "rsa-1")
        # Garbage.
        for garbage in ("x", "a.b.c", "....", "e30.e30.e30", f"{head}.@@@.{signature}"):
            await api.refused(garbage, "InvalidAuthHeader")
        # The real one still works.
        assert (await api.identity(good))["subject"] == "user-1"


async def test_rotated_keys_are_fetched_again_at_most_once_per_interval(
    tmp_path: Path, server: JwksServer, rsa_key: Key
) -> None:
    server.documents["/jwks.json"] = jwks(rsa_key)
    async with open_api(tmp_path / "convex", [custom(server("/jwks.json"))]) as api:
        await api.identity(rsa_key.sign(claims(T0)))
        assert server.hits["/jwks.json"] == 1
        rotated = Key.rsa("rsa-2")
        server.documents["/jwks.json"] = jwks(rsa_key, rotated)
        # Just fetched: the new kid waits for the refresh interval (no fetch per token).
        await api.refused(rotated.sign(claims(T0)), "UnknownKey", "'rsa-2'")
        assert server.hits["/jwks.json"] == 1
        api.clock.now = T0 + REFRESH_S
        assert (await api.identity(rotated.sign(claims(T0))))["subject"] == "user-1"
        assert server.hits["/jwks.json"] == 2
        # Unknown kids do not make it fetch again within the interval.
        for _ in range(3):
            await api.refused(Key.ec("nope").sign(claims(T0)), "WrongAlgorithm")
            await api.refused(Key.rsa("nope").sign(claims(T0)), "UnknownKey")
        assert server.hits["/jwks.json"] == 2


async def test_keys_fetched_before_serve_while_the_endpoint_fails(
    tmp_path: Path, server: JwksServer, rsa_key: Key
) -> None:
    server.documents["/jwks.json"] = jwks(rsa_key)
    async with open_api(tmp_path / "convex", [custom(server("/jwks.json"))], max_age=600) as api:
        token = rsa_key.sign(claims(T0, exp=T0 + 7200))
        await api.identity(token)
        del server.documents["/jwks.json"]
        api.clock.now = T0 + 601  # stale: fetched again, which fails
        await api.identity(token)
        assert server.hits["/jwks.json"] == 2


async def test_keys_that_cannot_be_fetched_are_a_401(
    tmp_path: Path, server: JwksServer, rsa_key: Key
) -> None:
    server.documents["/not-jwks.json"] = {"hello": "world"}
    providers = [
        custom(server("/missing.json")),
        custom(server("/not-jwks.json"), issuer="https://b.example"),
        custom(f"http://127.0.0.1:{free_port()}/jwks.json", issuer="https://c.example"),
    ]
    async with open_api(tmp_path / "convex", providers) as api:
        await api.refused(rsa_key.sign(claims(T0)), "KeysUnavailable", "HTTP 404")
        token_b = rsa_key.sign(claims(T0, iss="https://b.example"))
        await api.refused(token_b, "KeysUnavailable", "`keys`")
        token_c = rsa_key.sign(claims(T0, iss="https://c.example"))
        await api.refused(token_c, "KeysUnavailable", "could not be fetched")


async def test_a_hanging_key_endpoint_holds_up_only_its_own_tokens(
    tmp_path: Path, server: JwksServer, rsa_key: Key, ec_key: Key
) -> None:
    providers = [
        custom(server("/hang")),
        custom(jwks(ec_key), "ES256", issuer="https://other.example"),
    ]
    async with open_api(tmp_path / "convex", providers, fetch_timeout=2.0) as api:
        outcome: list[httpx.Response] = []

        async def waiting_for_keys() -> None:
            outcome.append(await api.me(rsa_key.sign(claims(T0))))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(waiting_for_keys)
                await anyio.to_thread.run_sync(server.hanging.wait, 20)
                # Meanwhile: no token, and a token of another provider, go on.
                assert (await api.me(None)).json()["value"] is None
                other = ec_key.sign(claims(T0, iss="https://other.example"))
                assert (await api.identity(other))["issuer"] == "https://other.example"
        (response,) = outcome
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == "KeysUnavailable"
        assert "did not answer within 2 s" in body["message"]


# --------------------------------------------------------------------------
# Other kinds of providers and key sources


async def test_es256_with_an_inline_jwks(tmp_path: Path, ec_key: Key, rsa_key: Key) -> None:
    async with open_api(tmp_path / "convex", [custom(jwks(ec_key), "ES256")]) as api:
        assert (await api.identity(ec_key.sign(claims(T0))))["subject"] == "user-1"
        await api.refused(rsa_key.sign(claims(T0)), "WrongAlgorithm", "RS256", "ES256")
        await api.refused(Key.ec("ec-2").sign(claims(T0)), "UnknownKey", "'ec-2'")


async def test_keys_of_the_wrong_type_or_with_private_parts(tmp_path: Path, ec_key: Key) -> None:
    rsa_twin = Key.rsa(ec_key.kid)  # an RSA key under the kid the EC token names
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.private))
    providers = [
        custom(jwks(rsa_twin), "ES256"),
        custom({"keys": [{**private_jwk, "kid": "ec-1"}]}, "ES256", issuer="https://p.example"),
    ]
    async with open_api(tmp_path / "convex", providers) as api:
        await api.refused(ec_key.sign(claims(T0)), "UnknownKey", "not a usable ES256 public key")
        token = ec_key.sign(claims(T0, iss="https://p.example"))
        assert (await api.identity(token))["issuer"] == "https://p.example"


async def test_a_jwks_file_and_a_data_uri(tmp_path: Path, rsa_key: Key, ec_key: Key) -> None:
    app_dir = tmp_path / "convex"
    app_dir.mkdir()
    (app_dir / "keys.json").write_text(json.dumps(jwks(rsa_key)))
    data = base64.b64encode(json.dumps(jwks(ec_key)).encode()).decode()
    providers = [
        custom("keys.json"),
        custom(f"data:text/plain;charset=utf-8;base64,{data}", "ES256", issuer="https://d.example"),
    ]
    async with open_api(app_dir, providers) as api:
        assert (await api.identity(rsa_key.sign(claims(T0))))["issuer"] == ISSUER
        token = ec_key.sign(claims(T0, iss="https://d.example"))
        assert (await api.identity(token))["issuer"] == "https://d.example"


async def test_without_application_id_any_audience_goes(tmp_path: Path, rsa_key: Key) -> None:
    provider = {k: v for k, v in custom(jwks(rsa_key)).items() if k != "applicationID"}
    async with open_api(tmp_path / "convex", [provider]) as api:
        await api.identity(rsa_key.sign(claims(T0, aud="whatever")))
        await api.identity(rsa_key.sign({k: v for k, v in claims(T0).items() if k != "aud"}))


async def test_an_oidc_provider_found_by_discovery(
    tmp_path: Path, server: JwksServer, rsa_key: Key, ec_key: Key
) -> None:
    domain = server("/tenant")
    server.documents["/tenant/.well-known/openid-configuration"] = {
        "issuer": domain + "/",
        "jwks_uri": server("/tenant/keys"),
    }
    server.documents["/tenant/keys"] = jwks(rsa_key, ec_key)
    providers = [{"domain": domain, "applicationID": AUDIENCE}]
    async with open_api(tmp_path / "convex", providers) as api:
        # The token's iss has the trailing slash the configured domain lacks.
        token = rsa_key.sign(claims(T0, iss=domain + "/", aud=[AUDIENCE, "other"]))
        me = await api.identity(token)
        assert me["token_identifier"] == f"{domain}/|user-1"
        # RS256 only, unless the entry says otherwise (as in Convex).
        await api.refused(ec_key.sign(claims(T0, iss=domain)), "WrongAlgorithm", "ES256")
        await api.refused(rsa_key.sign(claims(T0, iss=domain, aud="x")), "WrongAudience")
        assert server.hits["/tenant/.well-known/openid-configuration"] == 1


async def test_an_oidc_discovery_naming_another_issuer_is_not_trusted(
    tmp_path: Path, server: JwksServer, rsa_key: Key
) -> None:
    domain = server("/tenant")
    server.documents["/tenant/.well-known/openid-configuration"] = {
        "issuer": "https://elsewhere.example",
        "jwks_uri": server("/tenant/keys"),
    }
    server.documents["/tenant/keys"] = jwks(rsa_key)
    providers = [{"domain": domain, "applicationID": AUDIENCE}]
    async with open_api(tmp_path / "convex", providers) as api:
        message = await api.refused(rsa_key.sign(claims(T0, iss=domain)), "KeysUnavailable")
        assert "https://elsewhere.example" in message
        assert "/tenant/keys" not in server.hits  # its keys were never fetched


async def test_an_oidc_provider_may_name_its_algorithm(
    tmp_path: Path, server: JwksServer, ec_key: Key
) -> None:
    server.documents["/.well-known/openid-configuration"] = {"jwks_uri": server("/keys")}
    server.documents["/keys"] = jwks(ec_key)
    providers = [{"domain": server.url, "applicationID": AUDIENCE, "algorithm": "ES256"}]
    async with open_api(tmp_path / "convex", providers) as api:
        await api.identity(ec_key.sign(claims(T0, iss=server.url)))


# --------------------------------------------------------------------------
# No auth_config.py; the insecure dev flag


async def test_without_auth_config_tokens_are_refused(tmp_path: Path, rsa_key: Key) -> None:
    async with open_api(tmp_path / "convex", None) as api:
        message = await api.refused(rsa_key.sign(claims(T0)), "NoAuthProvider", "auth_config.py")
        assert "add one" in message.lower()
        # Malformed ones still say so first.
        await api.refused("a.b.c", "InvalidAuthHeader")


async def test_insecure_unverified_reads_any_token(tmp_path: Path) -> None:
    forged = unsigned({"alg": "none"}, {"sub": "u", "iss": "i", "exp": 1}) + ".x"
    async with open_api(tmp_path / "convex", None, insecure_unverified=True) as api:
        assert (await api.identity(forged))["token_identifier"] == "i|u"
        await api.refused("x.y", "InvalidAuthHeader")


# --------------------------------------------------------------------------
# auth_config.py: parsing and reloading


@pytest.mark.parametrize(
    ("providers", "words"),
    [
        ({"domain": "https://a"}, ["`providers` must be a list", "dict"]),
        (["https://a"], ["providers[0] must be a dict", "str"]),
        ([{"domain": "https://a"}], ["providers[0]", "`applicationID`"]),
        ([{"domain": "auth.example.com", "applicationID": "x"}], ["providers[0]", "`domain`"]),
        ([{"issuer": "https://a", "jwks": "k.json"}], ["providers[0]", "customJwt"]),
        (
            [{"domain": "https://a", "applicationID": "x", "audience": "y"}],
            ["providers[0]", "unknown field 'audience'"],
        ),
        ([{"type": "oidc"}], ["providers[0]", "`type`"]),
        (
            [{"type": "customJwt", "issuer": "https://a", "algorithm": "RS256"}],
            ["providers[0] (customJwt)", "`jwks`"],
        ),
        (
            [{"type": "customJwt", "issuer": "https://a", "jwks": {"keys": []}}],
            ["providers[0] (customJwt)", "`algorithm`", "RS256", "got nothing"],
        ),
        (
            [{"type": "customJwt", "issuer": "i", "jwks": {"keys": []}, "algorithm": "HS256"}],
            ["`algorithm`", "'HS256'"],
        ),
        (
            [{"type": "customJwt", "issuer": "i", "jwks": {"keys": []}, "algorithm": "none"}],
            ["`algorithm`", "'none'"],
        ),
        (
            [{"type": "customJwt", "issuer": "i", "jwks": {"keys": [1]}, "algorithm": "RS256"}],
            ["`jwks`", "keys[0]"],
        ),
        (
            [{"type": "customJwt", "issuer": "i", "jwks": "missing.json", "algorithm": "RS256"}],
            ["`jwks`", "missing.json", "cannot be read"],
        ),
        (
            [{"type": "customJwt", "issuer": "i", "jwks": "data:;base64,!!", "algorithm": "ES256"}],
            ["`jwks`", "base64"],
        ),
        (
            [{"type": "customJwt", "issuer": "", "jwks": {"keys": []}, "algorithm": "ES256"}],
            ["`issuer`", "non-empty string"],
        ),
        (
            [
                {"domain": "https://a", "applicationID": "x"},
                {"type": "customJwt", "issuer": "i", "jwks": 3, "algorithm": "ES256"},
            ],
            ["providers[1] (customJwt)", "`jwks`", "int"],
        ),
    ],
)
def test_malformed_configs_name_the_entry_and_field(
    tmp_path: Path, providers: Any, words: list[str]
) -> None:
    with pytest.raises(AuthConfigError) as caught:
        parse_auth_config(providers, base_dir=tmp_path)
    for word in words:
        assert word in str(caught.value)


def test_a_config_parses_to_providers(tmp_path: Path, rsa_key: Key) -> None:
    config = parse_auth_config(
        [
            {"domain": "https://a.example", "applicationID": "app"},
            custom("https://keys.example/jwks.json", "ES256"),
            custom(jwks(rsa_key)),
        ],
        base_dir=tmp_path,
    )
    oidc, by_url, inline = config.providers
    assert oidc == OidcProvider("https://a.example", "app", "RS256")
    assert isinstance(by_url, CustomJwtProvider) and isinstance(inline, CustomJwtProvider)
    assert by_url.jwks_url == "https://keys.example/jwks.json" and by_url.jwks is None
    assert inline.jwks == jwks(rsa_key) and inline.application_id == AUDIENCE


async def test_a_malformed_reload_keeps_the_previous_config(tmp_path: Path, rsa_key: Key) -> None:
    async with open_api(tmp_path / "convex", [custom(jwks(rsa_key))]) as api:
        token = rsa_key.sign(claims(T0))
        await api.identity(token)
        config_file = api.app_dir / "auth_config.py"
        config_file.write_text(auth_config_source([custom(jwks(rsa_key), "HS256")]))
        with pytest.raises(AppLoadError) as caught:
            await api.runtime.reload()
        assert "auth_config.py: providers[0] (customJwt): `algorithm`" in str(caught.value)
        assert caught.value.file is not None and caught.value.file.endswith("auth_config.py")
        await api.identity(token)  # still the previous config
        config_file.write_text("PROVIDERS = []\n")
        with pytest.raises(AppLoadError, match="module-level `providers` list"):
            await api.runtime.reload()
        config_file.write_text(auth_config_source([custom(jwks(rsa_key), issuer="https://n")]))
        await api.runtime.reload()
        await api.refused(token, "NoAuthProvider", "https://n")
        config_file.unlink()
        await api.runtime.reload()
        await api.refused(token, "NoAuthProvider", "no auth_config.py")


def test_identity_from_claims_maps_convex_fields() -> None:
    identity = identity_from_claims(
        {
            "sub": "u",
            "iss": "i",
            "aud": "a",
            "exp": 2,
            "family_name": "L",
            "nickname": "n",
            "preferred_username": "pu",
            "profile": "https://p",
            "gender": "g",
            "phone_number": "+1",
            "phone_number_verified": False,
            "updated_at": "2024-01-01T00:00:00Z",
            "email_verified": "yes",  # not a boolean: left out
            "roles": ["a", "b"],
            "empty": {},
        }
    )
    assert identity.token_identifier == "i|u"
    assert identity.family_name == "L" and identity.nickname == "n"
    assert identity.preferred_username == "pu" and identity.profile_url == "https://p"
    assert identity.gender == "g" and identity.phone_number == "+1"
    assert identity.phone_number_verified is False and identity.email_verified is None
    assert identity.updated_at == "2024-01-01T00:00:00Z"
    assert identity.claims == {"roles": ["a", "b"], "empty": {}}


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.text(max_size=5), scalars | st.dictionaries(st.text(max_size=3), scalars))
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "none", "HS256"]) | json_values,
        "kid": st.sampled_from(["rsa-1", "x"]) | json_values,
    },
)
payloads = st.fixed_dictionaries(
    {"sub": st.just("u") | json_values, "iss": st.just(ISSUER) | json_values},
    optional={name: json_values for name in ("aud", "exp", "nbf", "iat", "profile", "address")},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    token=st.text(max_size=40)
    | st.tuples(headers, payloads, st.binary(max_size=8)).map(
        lambda t: f"{unsigned(t[0], t[1])}.{b64(t[2])}"
    )
)
def test_any_token_is_an_identity_or_an_authentication_error(rsa_key: Key, token: str) -> None:
    config = parse_auth_config([custom(jwks(rsa_key))], base_dir=Path("."))
    verifier = TokenVerifier(clock=Clock())
    try:
        asyncio.run(verifier.identity(token, config))
    except AuthenticationError as exc:
        assert exc.code and exc.message


@pytest.mark.parametrize("insecure", [False, True])
async def test_the_dev_banner_says_how_tokens_are_checked(
    tmp_path: Path, rsa_key: Key, insecure: bool
) -> None:
    app_dir = write_app(
        tmp_path / "convex", {"auth_config.py": auth_config_source([custom(jwks(rsa_key))])}
    )
    stream = io.StringIO()
    printer = LogPrinter(stream, color=True)
    options = DevOptions(app_dir, insecure_unverified_jwt=insecure)
    async with Runtime(app_dir) as runtime:
        config = server_config(create_app(runtime))
        await _banner(runtime, printer, options, "http://x", "memory", "key", tmp_path, config)
    lines = stream.getvalue().splitlines()
    [auth] = [line for line in lines if "auth" in line and "key" not in line]
    warnings = [line for line in lines if "WARNING" in line]
    if insecure:
        assert "WITHOUT verification (--insecure-unverified-jwt)" in auth
        [warning] = warnings
        assert warning.startswith("\x1b[31m") and "bearer tokens are NOT verified" in warning
    else:
        assert f"customJwt provider {ISSUER} (RS256)" in auth
        assert warnings == []
