"""Dynamic client registration (RFC 7591) and client configuration (RFC 7592): the views (views.py), the client
metadata in and out (serializers.py), what a client may give itself (policy.py), and who may register with which
tokens (tokens.py). Other modules use only the token helpers re-exported here."""

from __future__ import annotations

from authz.clients.registration.tokens import (
    RegistrationMode,
    initial_access_token_create,
    is_registration_token,
    registration_mode,
)

__all__ = ["RegistrationMode", "initial_access_token_create", "is_registration_token", "registration_mode"]
