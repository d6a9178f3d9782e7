"""Protocol identifiers, each written once: the grant types, token types and assertion types on the wire.

Plain strings and nothing else, so that config/settings.py can import this module before Django is set up.
"""

from __future__ import annotations

# Grant types at the token endpoint (RFC 6749 §4, and the extension grants' own URNs).
AUTHORIZATION_CODE_GRANT_TYPE = "authorization_code"
CLIENT_CREDENTIALS_GRANT_TYPE = "client_credentials"
REFRESH_TOKEN_GRANT_TYPE = "refresh_token"
CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"  # CIBA Core §10.1
TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693 §2.1

# RFC 8693 §3: the one token type token exchange takes and issues.
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

# RFC 7523 §2.2: client_assertion_type of private_key_jwt client authentication.
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
