"""OAuth 2.0 Token Exchange (RFC 8693) for agents: a token issued here is exchanged for a narrower one, for another
resource or another agent, and the new token records who acts for whom (the `act` chain, RFC 8693 §4.1).

An exchanged token never outlives, and never exceeds, the token it came from (`Restrictions`): it inherits the subject
token's resource binding, audience, scope and authorization_details, and each hop can only narrow them, whatever it
names; its expiry is at most the subject token's, it stands only while its subject does (authz.tokens.policy), and
revoking the subject token revokes it (see `token_family_lock`). Exchanged tokens carry no refresh token: the agent
exchanges again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, overload

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from authz.constants import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT_TYPE
from authz.models import TokenDetails, ciba_client_of, client_allows_grant
from authz.tokens import trail
from authz.tokens.policy import MAX_CHAIN_DEPTH, details_of, token_active
from authz.tokens.resources import resource_indicator_error

if TYPE_CHECKING:
    from oauthlib.common import Request
    from oauthlib.oauth2 import RequestValidator
    from oauthlib.oauth2.rfc6749.tokens import TokenBase

logger = logging.getLogger(__name__)

# RFC 8693 §2.1: resource and audience may repeat; every other parameter appears at most once.
REPEATABLE = ("resource", "audience")
MAX_TARGETS = 10
MAX_PARAM_LENGTH = 16 * 1024


class InvalidTargetError(errors.OAuth2Error):
    # RFC 8693 §2.2.2: a resource or audience the server will not issue a token for.
    error = "invalid_target"


class InvalidAuthorizationDetailsError(errors.OAuth2Error):
    # RFC 9396 §5: requested authorization_details that are malformed, unknown or wider than approved.
    error = "invalid_authorization_details"


class ExchangeInvalidClient(errors.InvalidClientError):
    description = "Client authentication failed."

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6749 §5.2: the challenge names the scheme the client authenticates with (Basic), as authz.errors does.
        return {"WWW-Authenticate": 'Basic realm="countersign", error="invalid_client"'}


@dataclass(frozen=True)
class Restrictions:
    """What a token is good for: the resources it is bound to (RFC 8707), the clients it is addressed to (RFC 8693
    audience), its scope and its authorization_details (RFC 9396). Empty resources or audience: not bound yet.

    The one policy for every hop (`narrowed`): the new token inherits each restriction of its subject token, and a
    hop may only narrow it. A hop that names only an audience keeps the subject's resource binding and the other way
    round, so no order of hops unbinds a token. Once addressed, the audience narrows like the resources: the owner of
    a token decides every agent its authority may reach; an agent named there passes it on only within that list."""

    resources: list[str]
    audience: list[str]
    scopes: list[str]
    authorization_details: list[dict[str, Any]]

    @classmethod
    def of(cls, token: Any, details: TokenDetails | None) -> Restrictions:
        return cls(
            resources=list(token.resource or []),
            audience=list(details.audience) if details else [],
            scopes=token.scope.split(),
            authorization_details=list(details.authorization_details) if details else [],
        )

    def narrowed(
        self,
        *,
        resources: list[str],
        audience: list[str],
        scope: str | None,
        authorization_details: str | None,
        ciba: Any,
        request: Request,
    ) -> Restrictions:
        return Restrictions(
            # RFC 8707 section 2.2: a token limited to some resources cannot be exchanged for others.
            resources=_narrowed_targets(self.resources, resources, "resource", request),
            audience=_narrowed_targets(self.audience, audience, "audience", request),
            scopes=_narrowed_scopes(scope, self.scopes, ciba, request),
            authorization_details=_narrowed_details(authorization_details, self.authorization_details, ciba, request),
        )


@dataclass(frozen=True)
class ExchangeRequest:
    """What a validated exchange will issue."""

    subject: Any
    restrictions: Restrictions
    act: dict[str, Any]
    expires_in: int
    granted_at: datetime | None  # the approval the subject token came from (TokenDetails.granted_at)


class TokenExchangeGrant(GrantTypeBase):
    """RFC 8693 §2: grant_type=urn:ietf:params:oauth:grant-type:token-exchange at the token endpoint."""

    # Always built with DOT's validator (CountersignServer); the private member is oauthlib's, left out of its stubs.
    request_validator: RequestValidator
    _get_default_headers: Callable[[], dict[str, str]]

    def create_token_response(self, request: Request, token_handler: TokenBase) -> tuple[dict[str, str], str, int]:
        headers = self._get_default_headers()
        try:
            with transaction.atomic():
                exchange = self.validate_token_request(request)
                # oauthlib hands its grants a BearerToken; its stubs type it as TokenBase, which has no create_token.
                token = token_handler.create_token(request, refresh_token=False)  # type: ignore[attr-defined]
                # DOT's save_bearer_token derives `expires` from expires_in: the subject token's expiry bounds it.
                token["expires_in"] = exchange.expires_in
                self.request_validator.save_token(token, request)
                issued = vars(request).get("issued_access_token") or _find_access_token(token["access_token"])
                details = TokenDetails.objects.create(
                    access_token=issued,
                    authorization_details=exchange.restrictions.authorization_details,
                    audience=exchange.restrictions.audience,
                    act=exchange.act,
                    subject_token=exchange.subject,
                    granted_at=exchange.granted_at,
                )
                trail.record_exchanged(
                    subject=exchange.subject, issued=issued, client_id=request.client_id, at=timezone.now()
                )
        except errors.OAuth2Error as e:
            headers.update(e.headers)
            return headers, e.json, e.status_code
        body: dict[str, Any] = {
            "access_token": token["access_token"],
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": exchange.expires_in,
            "scope": " ".join(exchange.restrictions.scopes),
        }
        if exchange.restrictions.authorization_details:
            body["authorization_details"] = exchange.restrictions.authorization_details
        logger.info(
            "Exchanged access token %s for token %s issued to client %s",
            exchange.subject.pk,
            details.access_token_id,
            request.client_id,
        )
        return headers, json.dumps(body), 200

    def validate_token_request(self, request: Request) -> ExchangeRequest:
        """RFC 8693 §2.1, §2.2.2. Runs inside the issuing transaction: the subject token row stays locked until the
        new token is written, so a concurrent revocation cannot leave a token derived from a revoked one."""
        if request.grant_type != TOKEN_EXCHANGE_GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        params = _read_params(request)
        if not self.request_validator.authenticate_client(request) or request.client is None:
            raise ExchangeInvalidClient(request=request)
        request.client_id = request.client_id or request.client.client_id
        ciba = ciba_client_of(request.client)
        if ciba is None or not client_allows_grant(request.client, TOKEN_EXCHANGE_GRANT_TYPE):
            raise errors.UnauthorizedClientError(
                description="This client is not allowed to exchange tokens.", request=request
            )

        subject_value = _single(params, "subject_token", request, required=True)
        if _single(params, "subject_token_type", request, required=True) != ACCESS_TOKEN_TYPE:
            raise errors.InvalidRequestError(
                description=f"subject_token_type must be {ACCESS_TOKEN_TYPE}.", request=request
            )
        requested_type = _single(params, "requested_token_type", request)
        if requested_type is not None and requested_type != ACCESS_TOKEN_TYPE:
            raise errors.InvalidRequestError(description=f"Only {ACCESS_TOKEN_TYPE} can be requested.", request=request)
        actor_value = _single(params, "actor_token", request)
        actor_type = _single(params, "actor_token_type", request)
        if (actor_value is None) != (actor_type is None):
            raise errors.InvalidRequestError(
                description="actor_token and actor_token_type go together.", request=request
            )
        if actor_type is not None and actor_type != ACCESS_TOKEN_TYPE:
            raise errors.InvalidRequestError(
                description=f"actor_token_type must be {ACCESS_TOKEN_TYPE}.", request=request
            )

        resources = _targets(params, "resource")
        audience = _targets(params, "audience")
        if not resources and not audience:
            raise errors.InvalidRequestError(
                description="Name the target with resource or audience (RFC 8693 section 2.1).", request=request
            )

        subject = _locked_token(subject_value)
        subject_details = details_of(subject) if subject is not None else None
        if subject is None or not token_active(subject) or not _may_present(subject, subject_details, request.client):
            # The same answer for an unknown token and another client's: a client cannot probe other clients' tokens.
            raise errors.InvalidGrantError(
                description="The subject_token is not an active access token.", request=request
            )

        if actor_value is not None:
            # Decision (RFC 8693 section 2.1 leaves it open): the actor is the calling client. An actor_token must be
            # one issued to the caller, so no client can name another, whose token it may have come to hold, as
            # the actor in the `act` chain resource servers rely on.
            actor = _find_access_token(actor_value)
            if actor is None or actor.application_id != request.client.pk or not token_active(actor):
                raise errors.InvalidGrantError(
                    description="The actor_token is not an active access token of the calling client.", request=request
                )

        previous_act = subject_details.act if subject_details else None
        if _chain_depth(previous_act) >= MAX_CHAIN_DEPTH:
            raise errors.InvalidGrantError(
                description="The subject_token was exchanged too many times already.", request=request
            )
        act: dict[str, Any] = {"sub": request.client_id}
        if previous_act:
            act["act"] = previous_act

        _check_resources(resources, request)
        _check_audience(audience, request)
        restrictions = Restrictions.of(subject, subject_details).narrowed(
            resources=resources,
            audience=audience,
            scope=_single(params, "scope", request),
            authorization_details=_single(params, "authorization_details", request),
            ciba=ciba,
            request=request,
        )

        now = timezone.now()
        lifetime = min(
            timedelta(seconds=oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS), subject.expires - now
        ).total_seconds()
        expires_in = int(lifetime)  # rounded down: never past the subject token's expiry
        if expires_in < 1:
            raise errors.InvalidGrantError(description="The subject_token is about to expire.", request=request)

        request.user = subject.user
        request.scopes = restrictions.scopes
        vars(request)["resource"] = restrictions.resources  # DOT stores it as the token's RFC 8707 resource
        request.claims = None
        # What a JWT access token carries (authz.tokens.access), known before the token is generated.
        vars(request)["countersign_exchange"] = {
            "authorization_details": restrictions.authorization_details,
            "audience": restrictions.audience,
            "act": act,
            "expires_in": expires_in,
        }
        return ExchangeRequest(
            subject=subject,
            restrictions=restrictions,
            act=act,
            expires_in=expires_in,
            granted_at=subject_details.granted_at if subject_details else None,
        )


def token_family_lock(token_value: str) -> tuple[int, list[int]] | None:
    """Locks the access token `token_value` names (an access token or its refresh token) and every token exchanged
    from it, directly or down a chain: (its pk, their pks), or None if there is no such token.

    Decision (RFC 8693 §1.1 leaves it to the server): revoking a token revokes everything exchanged from it. An
    exchanged token is delegated authority; once the delegating token is withdrawn, the agents further down the
    chain must lose it too, or revocation would stop only the first hop. Called inside the revocation transaction,
    so an exchange that races the revocation waits for the lock and then finds its subject gone."""
    AccessToken = get_access_token_model()
    checksum = hashlib.sha256(token_value.encode("utf-8")).hexdigest()
    root = AccessToken.objects.select_for_update().filter(token_checksum=checksum).values_list("pk", flat=True).first()
    if root is None:
        access_token_id = (
            get_refresh_token_model()
            .objects.filter(token_checksum=checksum)
            .values_list("access_token_id", flat=True)
            .first()
        )
        if access_token_id is None:
            return None
        root = AccessToken.objects.select_for_update().filter(pk=access_token_id).values_list("pk", flat=True).first()
        if root is None:
            return None
    family: list[int] = []
    frontier = [root]
    for _hop in range(MAX_CHAIN_DEPTH + 1):
        children = list(
            TokenDetails.objects.select_for_update()
            .filter(subject_token_id__in=frontier)
            .values_list("access_token_id", flat=True)
        )
        children = [pk for pk in children if pk not in family and pk != root]
        if not children:
            break
        family += children
        frontier = children
    return root, family


def exchanged_tokens_revoke(*, root_id: int, downstream_ids: list[int]) -> int:
    """Revokes the tokens exchanged from `root_id` once the root itself is gone; the number revoked."""
    AccessToken = get_access_token_model()
    if not downstream_ids or AccessToken.objects.filter(pk=root_id).exists():
        return 0  # the revocation did not remove the root (another client's token, RFC 7009 §2.2)
    _total, by_model = AccessToken.objects.filter(pk__in=downstream_ids).delete()
    logger.info("Revoked %s tokens exchanged from revoked token %s", len(downstream_ids), root_id)
    # The access tokens alone: the total counts their TokenDetails (CASCADE) as well.
    return int(by_model.get(AccessToken._meta.label, 0))


def _read_params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.decoded_body or []:
        if "\x00" in key or "\x00" in value:
            # PostgreSQL cannot compare text containing NUL: a lookup would fail with a 500.
            raise errors.InvalidRequestError(description="Parameters must not contain NUL characters.", request=request)
        if len(value) > MAX_PARAM_LENGTH:
            raise errors.InvalidRequestError(description=f"The parameter {key[:40]} is too long.", request=request)
        params.setdefault(key, []).append(value)
    for key, values in params.items():
        if len(values) > 1 and key not in REPEATABLE:
            raise errors.InvalidRequestError(description=f"The parameter {key[:40]} is repeated.", request=request)
    return params


@overload
def _single(params: dict[str, list[str]], name: str, request: Request, *, required: Literal[True]) -> str: ...


@overload
def _single(params: dict[str, list[str]], name: str, request: Request, *, required: bool = False) -> str | None: ...


def _single(params: dict[str, list[str]], name: str, request: Request, *, required: bool = False) -> str | None:
    values = params.get(name)
    if not values or not values[0]:
        if required:
            raise errors.InvalidRequestError(description=f"{name} is required.", request=request)
        return None
    return values[0]


def _targets(params: dict[str, list[str]], name: str) -> list[str]:
    values: list[str] = []
    for value in params.get(name, []):
        if value and value not in values:
            values.append(value)
    if len(values) > MAX_TARGETS:
        raise InvalidTargetError(description=f"At most {MAX_TARGETS} {name} values.")
    return values


def _locked_token(value: str) -> Any | None:
    checksum = hashlib.sha256(value.encode("utf-8")).hexdigest()
    return (
        get_access_token_model()
        .objects.select_for_update(of=("self",))
        .select_related("application", "user")
        .filter(token_checksum=checksum)
        .first()
    )


def _find_access_token(value: str) -> Any | None:
    checksum = hashlib.sha256(value.encode("utf-8")).hexdigest()
    return get_access_token_model().objects.select_related("application").filter(token_checksum=checksum).first()


def _may_present(token: Any, details: TokenDetails | None, client: Any) -> bool:
    """RFC 8693 section 2.1: a client presents a subject token issued to it or addressed to it (its audience)."""
    return token.application_id == client.pk or client.client_id in (details.audience if details else [])


def _chain_depth(act: Any) -> int:
    depth = 0
    while isinstance(act, dict) and depth <= MAX_CHAIN_DEPTH:
        depth += 1
        act = act.get("act")
    return depth


def _check_resources(resources: list[str], request: Request) -> None:
    for resource in resources:
        problem = resource_indicator_error(resource)
        if problem:
            raise InvalidTargetError(description=problem, request=request)


def _narrowed_targets(held: list[str], requested: list[str], name: str, request: Request) -> list[str]:
    """A hop's resources or audience: the subject's when the hop names none, else a subset of the subject's (any
    value when the subject is not bound yet)."""
    if not requested:
        return list(held)
    if held and any(value not in held for value in requested):
        raise InvalidTargetError(
            description=f"The subject_token is not valid for the requested {name}.", request=request
        )
    return requested


def _check_audience(audience: list[str], request: Request) -> None:
    # The audience of an agent-to-agent exchange is the next agent, named by its client_id: an unknown name would
    # give a token nobody here can recognise (RFC 8693 §2.2.2 invalid_target).
    if not audience:
        return
    # A client that deleted its registration is unknown too (RFC 7592 §2.3), though its row stays for the audit trail.
    registered = get_application_model().objects.filter(client_id__in=audience, ciba__deregistered_at__isnull=True)
    known = set(registered.values_list("client_id", flat=True))
    unknown = [a for a in audience if a not in known]
    if unknown:
        raise InvalidTargetError(description="Unknown audience; name a registered client_id.", request=request)


def _narrowed_scopes(requested: str | None, granted: list[str], ciba: Any, request: Request) -> list[str]:
    if requested is None:
        scopes = granted
    else:
        scopes = list(dict.fromkeys(requested.split()))
        if not scopes or not set(scopes) <= set(granted):
            raise errors.InvalidScopeError(
                description="The scope must be a subset of the subject_token's scope.", request=request
            )
    if not ciba.allows_scopes(scopes):
        raise errors.InvalidScopeError(description="This client may not hold these scopes.", request=request)
    return scopes


def _narrowed_details(
    requested: str | None, approved: list[dict[str, Any]], ciba: Any, request: Request
) -> list[dict[str, Any]]:
    if requested is None:
        details = approved
    else:
        try:
            details = json.loads(requested)
        except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
            raise InvalidAuthorizationDetailsError(
                description="authorization_details must be a JSON array.", request=request
            ) from exc
        if not isinstance(details, list) or not all(
            isinstance(d, dict) and isinstance(d.get("type"), str) for d in details
        ):
            raise InvalidAuthorizationDetailsError(
                description="authorization_details must be an array of objects with a type.", request=request
            )
        for detail in details:
            if not any(_no_wider(detail, candidate) for candidate in approved):
                raise InvalidAuthorizationDetailsError(
                    description=f"The {detail['type'][:60]} authorization is wider than the subject_token's.",
                    request=request,
                )
        if not _each_narrows_its_own(details, approved):
            # RFC 9396 section 2: each object is one authorization; two copies of one approved payment are two.
            raise InvalidAuthorizationDetailsError(
                description="Each authorization_details object must narrow a different approved object.",
                request=request,
            )
    allowed_types = set(ciba.authorization_details_types or [])
    if allowed_types and any(d.get("type") not in allowed_types for d in details):
        raise InvalidAuthorizationDetailsError(
            description="This client may not use these authorization_details types.", request=request
        )
    return details


def _each_narrows_its_own(requested: list[dict[str, Any]], approved: list[dict[str, Any]]) -> bool:
    """Whether every requested object can be paired with an approved object of its own that it is no wider than
    (a bipartite matching by augmenting paths; approved holds at most authz.tokens.details.MAX_DETAILS objects, and a
    longer requested list is refused before any pairing)."""
    owner: dict[int, int] = {}  # approved index -> the requested index paired with it

    def pair(index: int, tried: set[int]) -> bool:
        for candidate, approved_detail in enumerate(approved):
            if candidate in tried or not _no_wider(requested[index], approved_detail):
                continue
            tried.add(candidate)
            if candidate not in owner or pair(owner[candidate], tried):
                owner[candidate] = index
                return True
        return False

    return len(requested) <= len(approved) and all(pair(index, set()) for index in range(len(requested)))


def _no_wider(requested: dict[str, Any], approved: dict[str, Any]) -> bool:
    """RFC 9396 §2: a requested object no wider than an approved one. Same fields (a left-out field such as
    `locations` could mean "anywhere", so it is not narrower), equal values, or for arrays a non-empty subset."""
    if not isinstance(approved, dict) or set(requested) != set(approved):
        return False
    for key, value in requested.items():
        granted = approved[key]
        if isinstance(granted, list) and isinstance(value, list):
            if not value or any(item not in granted for item in value):
                return False
        elif value != granted:
            return False
    return True
