"""The server's own RS256 keys: DOT's OIDC_RSA_PRIVATE_KEY signs, and it and OIDC_RSA_PRIVATE_KEYS_INACTIVE are
published at /oauth/jwks/. Our JWT access tokens (authz.tokens.access) and the id_token_hint check
(authz.ciba.request) name and find a key by the `kid` DOT gives it there and in ID token headers.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode
from oauth2_provider.settings import oauth2_settings


def rsa_jwk_thumbprint(key: RSAPrivateKey | RSAPublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of an RSA key: the `kid` DOT publishes for it (jwcrypto's JWK.thumbprint())."""
    jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    # RFC 7638 §3.2: only the required members, sorted, no whitespace.
    members = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return base64url_encode(hashlib.sha256(members.encode()).digest()).decode()


@lru_cache(maxsize=8)
def _load_private_key(pem: str) -> tuple[str, RSAPrivateKey]:
    # Parsing an RSA PEM costs milliseconds; the settings hold the same few keys for the life of the process.
    key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    if not isinstance(key, RSAPrivateKey):
        raise TypeError("OIDC_RSA_PRIVATE_KEY must be an RSA private key in PEM.")
    return rsa_jwk_thumbprint(key), key


def server_signing_key() -> tuple[str, RSAPrivateKey]:
    """The active key and its kid, which sign what this server issues."""
    return _load_private_key(oauth2_settings.OIDC_RSA_PRIVATE_KEY)


def server_public_keys() -> dict[str, RSAPublicKey]:
    """Every published key by kid, the active one first."""
    pems = [oauth2_settings.OIDC_RSA_PRIVATE_KEY, *oauth2_settings.OIDC_RSA_PRIVATE_KEYS_INACTIVE]
    keys: dict[str, RSAPublicKey] = {}
    for pem in pems:
        if pem:
            kid, key = _load_private_key(pem)
            keys[kid] = key.public_key()
    return keys
