"""Who may call: ``auth_config.py`` (:mod:`.config`), fetched keys (:mod:`.keys`)
and the bearer-token verifier (:mod:`.verify`, :class:`TokenVerifier`)."""

from .config import AuthConfig, AuthConfigError, CustomJwtProvider, OidcProvider, parse_auth_config
from .verify import DEFAULT_LEEWAY_S, AuthenticationError, TokenVerifier, identity_from_claims

__all__ = [
    "DEFAULT_LEEWAY_S",
    "AuthConfig",
    "AuthConfigError",
    "AuthenticationError",
    "CustomJwtProvider",
    "OidcProvider",
    "TokenVerifier",
    "identity_from_claims",
    "parse_auth_config",
]
