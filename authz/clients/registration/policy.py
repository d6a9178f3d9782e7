"""What a client may give itself by registering or by updating its registration: the administrator's last save of the
client (CibaClient.admin_limits) bounds it."""

from __future__ import annotations

from typing import Any

from authz.clients.registration.serializers import RESTRICTED_SCOPES, ClientMetadata, InvalidClientMetadata
from authz.models import CibaClient


def apply_registration_policy(metadata: ClientMetadata, *, current: CibaClient | None, current_name: str = "") -> None:
    """What a client may give itself by registering (RFC 7591, `current` None) or updating its registration (RFC 7592):
    `metadata` is narrowed in place, or InvalidClientMetadata says why it cannot be.

    An administrator's last save of the client (CibaClient.admin_limits) decides. What it allowed then is the ceiling
    of the client's grants, scopes and authorization_details types: values above it are replaced (RFC 7591 section 2
    lets the server substitute values; the response shows those in force), except where the result would be an empty
    list, which would mean every scope or type. What it required then (private_key_jwt, a signing algorithm, signed
    requests, the user's user_code) stays required. Administrator-only scopes come only from such a save. The
    verified mark stays only while the name and the website are those an administrator verified."""
    limits: dict[str, Any] = (current.admin_limits if current is not None else None) or {}
    ciba = metadata.ciba
    for name in ("ciba_enabled", "refresh_tokens", "client_credentials_enabled", "token_exchange_enabled"):
        if name in limits and not limits[name]:
            ciba[name] = False
    ciba["allowed_scopes"] = _limit_scopes(
        ciba["allowed_scopes"].split(), (limits.get("allowed_scopes") or "").split(), named=metadata.scope_named
    )
    ciba["authorization_details_types"] = _limit_types(
        ciba["authorization_details_types"], limits.get("authorization_details_types") or []
    )
    required_method = limits.get("token_endpoint_auth_method")
    if required_method == CibaClient.AuthMethod.PRIVATE_KEY_JWT and metadata.auth_method != required_method:
        raise InvalidClientMetadata(
            "token_endpoint_auth_method: an administrator requires private_key_jwt for this client."
        )
    for name in ("token_endpoint_auth_signing_alg", "backchannel_authentication_request_signing_alg"):
        required = limits.get(name)
        if required and ciba[name] != required:
            raise InvalidClientMetadata(f"{name}: an administrator requires {required} for this client.")
    if limits.get("backchannel_user_code_parameter") and not ciba["backchannel_user_code_parameter"]:
        raise InvalidClientMetadata("backchannel_user_code_parameter: an administrator requires true for this client.")
    # Approvers read the verified mark beside the name and the website: it belongs to the pair that was verified.
    ciba["website_verified"] = bool(
        current is not None
        and current.website_verified
        and metadata.application["name"] == current_name
        and ciba["website"] == current.website
    )


def _limit_scopes(requested: list[str], ceiling: list[str], *, named: bool) -> str:
    if ceiling and not named:
        requested = ceiling  # the default: every scope this client may have
    restricted = [s for s in requested if s in RESTRICTED_SCOPES and s not in ceiling]
    if restricted:
        raise InvalidClientMetadata(f"scope: {', '.join(restricted)} is granted by an administrator only.")
    if ceiling:
        requested = [s for s in requested if s in ceiling]
        if not requested:
            # An empty list would mean every scope.
            raise InvalidClientMetadata(f"scope: an administrator limits this client to {' '.join(ceiling)[:200]}.")
    return " ".join(requested)


def _limit_types(requested: list[str], ceiling: list[str]) -> list[str]:
    if not ceiling:
        return requested
    if not requested:
        return list(ceiling)  # empty means every type: every type this client may use
    limited = [t for t in requested if t in ceiling]
    if not limited:
        # An empty list would mean every type.
        raise InvalidClientMetadata(
            f"authorization_details_types: an administrator limits this client to {', '.join(ceiling)[:200]}."
        )
    return limited
