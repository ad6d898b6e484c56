"""Test keys, tokens and a JWKS server on 127.0.0.1 (a real HTTP server in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://auth.test.example"
AUDIENCE = "convexpy-tests"


@dataclass
class Key:
    """A signing key pair with its key id and algorithm."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> Key:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> Key:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK."""
        family = (
            jwt.algorithms.RSAAlgorithm if self.algorithm[0] == "R" else jwt.algorithms.ECAlgorithm
        )
        jwk: dict[str, Any] = json.loads(family.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **headers}
        )


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


def claims(now: float, **extra: Any) -> dict[str, Any]:
    """Valid claims for ISSUER / AUDIENCE at ``now`` (seconds), with ``extra`` on top."""
    base = {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": int(now) + 600}
    return {**base, **extra}


@dataclass
class JwksServer:
    """Serves ``documents`` (path -> JSON) on 127.0.0.1; ``/hang`` answers only
    when the server stops. ``hits`` counts requests per path."""

    documents: dict[str, Any] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    hanging: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def __call__(self, path: str) -> str:
        return self.url + path


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            if self.path == "/hang":
                state.hanging.set()
                state.release.wait(60)
                return
            document = state.documents.get(self.path)
            if document is None:
                self.send_response(404 if self.path != "/fail" else 500)
                self.end_headers()
                return
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def auth_config_source(providers: list[dict[str, Any]]) -> str:
    return f"providers = {providers!r}\n"
