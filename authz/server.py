from __future__ import annotations

from django.conf import settings
from oauthlib.openid import Server

from .grant import OpenIDCibaGrant


class CountersignServer(Server):
    """oauthlib's OpenID Connect server with the CIBA grant registered at the token endpoint."""

    def __init__(self, request_validator, *args, **kwargs) -> None:
        super().__init__(request_validator, *args, **kwargs)
        self.ciba_grant = OpenIDCibaGrant(request_validator)
        self._grant_types[settings.CIBA_GRANT_TYPE] = self.ciba_grant
