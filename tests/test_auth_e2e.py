"""Auth through the real dev server process and the official client."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from auth_helpers import Key, auth_config_source, claims, jwks, jwks_server
from convex.http_client import ConvexHttpClient
from e2e_helpers import SERVER_APP, dev_server, write_app

from convexpy.client import AsyncConvexClient

pytestmark = pytest.mark.slow


async def call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking client call in a thread, off the event loop."""
    return await anyio.to_thread.run_sync(partial(function, *args))


def provider(jwks_url: str, algorithm: str = "RS256") -> dict[str, Any]:
    return {
        "type": "customJwt",
        "issuer": "https://auth.test.example",
        "jwks": jwks_url,
        "algorithm": algorithm,
        "applicationID": "convexpy-tests",
    }


async def test_signed_tokens_through_the_dev_server(tmp_path: Path) -> None:
    key = Key.rsa("e2e-1")
    now = time.time()  # the dev server checks `exp` against the real clock
    with jwks_server() as keys:
        keys.documents["/jwks.json"] = jwks(key)
        app_dir = write_app(
            tmp_path / "convex",
            {**SERVER_APP, "auth_config.py": auth_config_source([provider(keys("/jwks.json"))])},
        )
        async with dev_server(app_dir, None) as server:
            await server.wait_for_output("customJwt provider https://auth.test.example (RS256)")
            client = ConvexHttpClient(server.url)
            client.set_auth(key.sign(claims(now, name="Ada")))
            who = await call(client.query, "values:whoami")
            assert who == {
                "subject": "user-1",
                "issuer": "https://auth.test.example",
                "name": "Ada",
            }

            client.set_auth(key.sign(claims(now, exp=int(now) - 3600)))
            with pytest.raises(Exception, match="401 TokenExpired"):
                await call(client.query, "values:whoami")
            client.set_auth(Key.rsa("e2e-1").sign(claims(now)))
            with pytest.raises(Exception, match="401 InvalidSignature"):
                await call(client.query, "values:whoami")

            # The websocket sync protocol verifies its Authenticate tokens the same way.
            async with AsyncConvexClient(server.url) as live:
                await live.set_auth(key.sign(claims(now, sub="live-user")))
                assert (await live.query("values:whoami"))["subject"] == "live-user"

            # A broken auth_config.py is refused on reload; the previous one keeps serving.
            (app_dir / "auth_config.py").write_text(
                auth_config_source([provider(keys("/jwks.json"), "HS256")])
            )
            line = await server.wait_for_output("Reload failed", within=10)
            assert "auth_config.py" in line
            await server.wait_for_output("providers[0] (customJwt): `algorithm`")
            client.set_auth(key.sign(claims(now)))
            assert (await call(client.query, "values:whoami"))["subject"] == "user-1"


async def test_insecure_flag_reads_tokens_unverified_and_says_so(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "convex")
    async with dev_server(app_dir, None, "--insecure-unverified-jwt") as server:
        await server.wait_for_output("WARNING: --insecure-unverified-jwt: bearer tokens are NOT")
        assert "read WITHOUT verification" in await server.wait_for_output("  auth ")
        client = ConvexHttpClient(server.url)
        forged = Key.ec("anything").sign({"sub": "mallory", "iss": "https://nobody.example"})
        client.set_auth(forged)
        who = await call(client.query, "values:whoami")
        assert who == {"subject": "mallory", "issuer": "https://nobody.example", "name": None}
