"""Clients' public keys and the JWTs they sign: private_key_jwt assertions (RFC 7523) and signed authentication
requests (CIBA Core §7.1.1) both come through `verify_client_jwt`.

Keys are registered inline (`jwks`) or by URL (`jwks_uri`). A URL is fetched through approvals.outbound (the SSRF
rules), cached for JWKS_CACHE_SECONDS, and fetched again when a JWT names a `kid` the cached set lacks (a client
rotating its keys), at most once per JWKS_REFRESH_SECONDS so unknown kids cannot make us hammer the client's server.

A fetch runs inside a web request, so a slow or failing key server must not hold the web workers: a failure is
remembered for JWKS_FAILURE_SECONDS (the client's assertions meanwhile are refused at once), one fetch per client runs
at a time and JWKS_FETCHES_AT_ONCE in all (locks in the cache, shared by every process, each expiring shortly after
the outbound deadline). A request that finds its fetch under way or no fetch free is refused at once, never queued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import jwt
from django.core.cache import cache
from jwt import PyJWK
from redis.exceptions import RedisError

from approvals import outbound
from approvals.conf import approvals_settings

if TYPE_CHECKING:
    from authz.models import CibaClient

logger = logging.getLogger(__name__)

SUPPORTED_ALGS = ("RS256", "PS256", "ES256", "EdDSA")
# Which key types can verify which algorithm (RFC 7518 §3, RFC 8037 §3.1).
_ALG_KEY = {"RS256": ("RSA", None), "PS256": ("RSA", None), "ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MAX_KEYS = 20
MIN_RSA_BITS = 2048
JWKS_CACHE_SECONDS = 300
JWKS_REFRESH_SECONDS = 10
JWKS_MAX_BYTES = 64 * 1024
JWKS_FAILURE_SECONDS = 30
JWKS_FETCHES_AT_ONCE = 2
# A fetch lock outlives the fetch's deadline by this much, so it is only ever released by its holder.
JWKS_LOCK_MARGIN_SECONDS = 5
CLOCK_LEEWAY_SECONDS = 30


class JwksError(ValueError):
    """A key set that cannot be used; the message is safe to show to the client's developer."""


class JoseError(ValueError):
    """A JWT that does not verify; the message is safe to show to the client's developer."""


def parse_jwks(data: Any) -> list[PyJWK]:
    """The usable public signing keys of a JWK Set (RFC 7517 §5), or JwksError saying what is wrong."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise JwksError("The JWK Set is not JSON.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError("A JWK Set is a JSON object with a keys array.")
    problem = jsonb_problem(data)
    if problem:
        # Refused here, for registration, admin and the command alike, rather than by the database as a 500.
        raise JwksError(f"The JWK Set {problem}.")
    raw_keys = data["keys"]
    if not raw_keys:
        raise JwksError("The JWK Set has no keys.")
    if len(raw_keys) > MAX_KEYS:
        raise JwksError(f"The JWK Set has more than {MAX_KEYS} keys.")
    keys: list[PyJWK] = []
    kids: set[str] = set()
    for index, raw in enumerate(raw_keys):
        where = f"key {index}" + (
            f" (kid {str(raw.get('kid'))[:40]})" if isinstance(raw, dict) and "kid" in raw else ""
        )
        if not isinstance(raw, dict):
            raise JwksError(f"{where} is not a JSON object.")
        if any(member in raw for member in _PRIVATE_MEMBERS):
            raise JwksError(f"{where} contains private or symmetric key material; register public keys only.")
        # RFC 7517 section 4: these members are strings; any other JSON type is refused before it is compared.
        wrong_type = [m for m in ("kty", "crv", "alg", "use") if m in raw and not isinstance(raw[m], str)]
        if wrong_type:
            raise JwksError(f"{where}: {', '.join(wrong_type)} must be a string.")
        if raw.get("use", "sig") != "sig":
            continue  # an encryption key has no say in verifying signatures
        kid = raw.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or not kid:
                raise JwksError(f"{where}: kid must be a non-empty string.")
            if kid in kids:
                raise JwksError(f"{where}: kid {kid[:40]} is used twice.")
            kids.add(kid)
        kty, crv = raw.get("kty"), raw.get("crv")
        if (kty, crv) not in {("RSA", None), ("EC", "P-256"), ("OKP", "Ed25519")}:
            raise JwksError(f"{where}: only RSA, EC P-256 and OKP Ed25519 keys are supported.")
        alg = raw.get("alg")
        if alg is not None and alg not in SUPPORTED_ALGS:
            raise JwksError(f"{where}: alg {str(alg)[:20]} is not supported ({', '.join(SUPPORTED_ALGS)}).")
        try:
            key = PyJWK(raw, algorithm=alg or _default_alg(cast(str, kty)))  # one of the key types just checked
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise JwksError(f"{where} is not a valid {kty} public key.") from exc
        if kty == "RSA" and key.key.key_size < MIN_RSA_BITS:
            raise JwksError(f"{where}: RSA keys must have at least {MIN_RSA_BITS} bits.")
        keys.append(key)
    if not keys:
        raise JwksError("The JWK Set has no signing keys.")
    return keys


def jsonb_problem(data: Any) -> str | None:
    """Why PostgreSQL's jsonb cannot store this decoded JSON, or None: a NUL in a string, or a number json.loads read
    as NaN or infinity (1e999 is valid JSON; the admin's JSON fields and the management commands decode with
    json.loads, not strict_json_loads)."""
    if contains_nul(data):
        return "must not contain NUL characters"
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:
        return "must not contain numbers too large for a float"
    return None


def contains_nul(data: Any) -> bool:
    """Whether any string of decoded JSON, member name or value, holds a NUL, which PostgreSQL text and jsonb cannot
    store (searching json.dumps(data) finds none: it writes NUL as an escape)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _default_alg(kty: str) -> str:
    return {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[kty]


def _fits(key: PyJWK, alg: str) -> bool:
    kty, crv = _ALG_KEY[alg]
    if key.key_type != kty or (crv is not None and key._jwk_data.get("crv") != crv):
        return False
    declared = key._jwk_data.get("alg")
    return declared is None or declared == alg


def strict_json_loads(raw: str | bytes) -> Any:
    """json.loads without NaN and Infinity, which are not JSON (RFC 8259 §6) and which PostgreSQL's jsonb refuses,
    nor numbers too large for a float (1e999), which Python would read as Infinity. Raises ValueError (or
    RecursionError for absurd nesting)."""
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large a number")
    return value


def is_numeric_date(value: object) -> bool:
    """RFC 7519 §2 NumericDate: a JSON number (PyJWT would also take the string "1700000000"; bool is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cache_key(kind: str, client_id: str, extra: str = "") -> str:
    digest = hashlib.sha256(f"{client_id}\x00{extra}".encode()).hexdigest()[:40]
    return f"jose:{kind}:{digest}"


def _fetch_jwks(uri: str, *, timeout: float) -> dict[str, Any]:
    try:
        response = outbound.request(
            "GET", uri, headers={"Accept": "application/json"}, timeout=timeout, max_bytes=JWKS_MAX_BYTES
        )
    except outbound.OutboundError as exc:
        raise JwksError(f"Could not fetch the client's jwks_uri: {exc}") from exc
    if response.status != 200:
        raise JwksError(f"The client's jwks_uri answered HTTP {response.status}.")
    try:
        data: dict[str, Any] = json.loads(response.body)
    except ValueError as exc:
        raise JwksError("The client's jwks_uri did not return JSON.") from exc
    parse_jwks(data)  # refuse a bad set before caching it
    return data


def _fetch_guarded(client_id: str, uri: str, *, refresh: bool) -> dict[str, Any]:
    """The client's key set from its jwks_uri, fetched under the limits in the module's docstring, and cached."""
    keys_key = _cache_key("jwks", client_id, uri)
    failure_key = _cache_key("jwks-failed", client_id, uri)
    _raise_recent_failure(failure_key)
    timeout = float(approvals_settings.OUTBOUND_TIMEOUT_SECONDS)
    hold = math.ceil(timeout) + JWKS_LOCK_MARGIN_SECONDS
    # Keyed on the client alone: a client that changes its jwks_uri (RFC 7592) while a fetch is held still fetches
    # one key set at a time, so it can never hold more than one of the server's few fetch slots.
    client_lock = _cache_key("jwks-fetching", client_id)
    if not _lock(client_lock, hold):
        raise JwksError("The client's jwks_uri is being fetched for another request; try again in a few seconds.")
    try:
        # The request that held the lock until now may have just cached the keys, or the failure.
        data: dict[str, Any] | None = None if refresh else _cache_get(keys_key)
        if data is not None:
            return data
        _raise_recent_failure(failure_key)
        slot = next((key for key in _FETCH_SLOTS if _lock(key, hold)), None)
        if slot is None:
            logger.warning("Every jwks_uri fetch slot is taken; refusing a client's assertion")
            raise JwksError("Too many jwks_uri fetches are under way on this server; try again in a few seconds.")
        try:
            data = _fetch_jwks(uri, timeout=timeout)
        except JwksError as exc:
            _cache_set(failure_key, str(exc), JWKS_FAILURE_SECONDS)
            raise
        finally:
            _unlock(slot)
        _cache_set(keys_key, data, JWKS_CACHE_SECONDS)
        return data
    finally:
        _unlock(client_lock)


_FETCH_SLOTS = tuple(f"jose:jwks-slot:{n}" for n in range(JWKS_FETCHES_AT_ONCE))


def _raise_recent_failure(failure_key: str) -> None:
    failure = _cache_get(failure_key)
    if failure:
        raise JwksError(f"{failure} The jwks_uri is fetched again at most every {JWKS_FAILURE_SECONDS} seconds.")


def client_keys(ciba: CibaClient, *, kid: str | None = None) -> list[PyJWK]:
    """The client's registered signing keys; for a jwks_uri client, fetched again if `kid` is not among them."""
    if ciba.jwks:
        return parse_jwks(ciba.jwks)
    if not ciba.jwks_uri:
        raise JwksError("The client has registered no keys (jwks or jwks_uri).")
    client_id = ciba.application.client_id
    data = _cache_get(_cache_key("jwks", client_id, ciba.jwks_uri))
    if data is None:
        return parse_jwks(_fetch_guarded(client_id, ciba.jwks_uri, refresh=False))
    keys = parse_jwks(data)
    # Key rotation: an unknown kid means look again, but not more often than JWKS_REFRESH_SECONDS for this client.
    if (
        kid is not None
        and not any(k.key_id == kid for k in keys)
        and _cache_add(_cache_key("jwks-refresh", client_id, ciba.jwks_uri), JWKS_REFRESH_SECONDS)
    ):
        keys = parse_jwks(_fetch_guarded(client_id, ciba.jwks_uri, refresh=True))
    return keys


def select_key(keys: Iterable[PyJWK], *, kid: str | None, alg: str) -> PyJWK:
    candidates = [k for k in keys if _fits(k, alg)]
    if kid is not None:
        named = [k for k in keys if k.key_id == kid]
        if not named:
            raise JoseError(f"No registered key has kid {kid[:40]}.")
        candidates = [k for k in named if _fits(k, alg)]
        if not candidates:
            raise JoseError(f"The key {kid[:40]} cannot verify {alg}.")
    if not candidates:
        raise JoseError(f"No registered key can verify {alg}.")
    if len(candidates) > 1:
        raise JoseError("Several registered keys could verify this JWT; name one with kid in the header.")
    return candidates[0]


def verify_client_jwt(
    token: str,
    *,
    ciba: CibaClient,
    algorithms: Iterable[str],
    audience: list[str],
    require: Iterable[str] = ("exp", "iss", "aud"),
    what: str = "JWT",
) -> dict[str, Any]:
    """The claims of a JWT the client signed with one of its registered keys, checked for signature, algorithm,
    `iss` (the client_id), `aud` (any of `audience`), and the time claims present (with CLOCK_LEEWAY_SECONDS)."""
    allowed = [alg for alg in algorithms if alg in SUPPORTED_ALGS]
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise JoseError(f"The {what} is not a signed JWT.") from exc
    alg = header.get("alg")
    if alg not in allowed:
        # alg "none" and HMAC algorithms land here: only the client's registered asymmetric algorithms verify.
        raise JoseError(f"The {what} is signed with {str(alg)[:20]}; this client may use {', '.join(allowed)}.")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JoseError(f"The {what}'s kid must be a string.")
    try:
        keys = client_keys(ciba, kid=kid)
    except JwksError as exc:
        raise JoseError(str(exc)) from exc
    key = select_key(keys, kid=kid, alg=alg)
    client_id = ciba.application.client_id
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=audience,
            issuer=client_id,
            leeway=CLOCK_LEEWAY_SECONDS,
            options={"require": list(require), "verify_aud": True, "verify_iss": True},
        )
    except jwt.InvalidSignatureError as exc:
        raise JoseError(f"The {what}'s signature does not verify with the client's registered key.") from exc
    except jwt.ExpiredSignatureError as exc:
        raise JoseError(f"The {what} has expired.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise JoseError(f"The {what} is not valid yet (nbf or iat in the future).") from exc
    except jwt.InvalidAudienceError as exc:
        raise JoseError(f"The {what}'s aud must be {' or '.join(audience)}.") from exc
    except jwt.InvalidIssuerError as exc:
        raise JoseError(f"The {what}'s iss must be the client_id.") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise JoseError(f"The {what} lacks the {exc.claim} claim.") from exc
    except jwt.PyJWTError as exc:
        raise JoseError(f"The {what} is not valid: {str(exc)[:100]}") from exc


def consume_jti(kind: str, *, client_id: str, jti: Any, expires_at: float) -> None:
    """Accept each `jti` of a client once (RFC 7523 §3 item 7), remembering it until the JWT expires.

    Fails closed: if the store cannot be reached, the JWT is refused rather than risk a replay."""
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise JoseError("jti must be a non-empty string of at most 255 characters.")
    timeout = max(1, int(expires_at - time.time()) + CLOCK_LEEWAY_SECONDS)
    try:
        fresh = cache.add(_cache_key(f"jti-{kind}", client_id, jti), 1, timeout)
    except RedisError as exc:
        logger.error("Cannot record a JWT's jti: the cache is unreachable")
        raise JoseError("The server cannot check this JWT for replay right now; try again.") from exc
    if not fresh:
        raise JoseError("This jti was already used; sign a new JWT for every request.")


def _cache_get(key: str) -> Any:
    try:
        return cache.get(key)
    except RedisError:
        logger.warning("JWKS cache unreachable; fetching keys directly")
        return None


def _cache_set(key: str, value: Any, timeout: int) -> None:
    try:
        cache.set(key, value, timeout)
    except RedisError:
        logger.warning("JWKS cache unreachable; keys not cached")


def _cache_add(key: str, timeout: int) -> bool:
    try:
        return bool(cache.add(key, 1, timeout))
    except RedisError:
        return True


def _lock(key: str, timeout: int) -> bool:
    """Take a lock shared by every process. Fails closed: without the cache no process could tell how many fetches
    are under way (and private_key_jwt needs the cache for its jti anyway)."""
    try:
        return bool(cache.add(key, 1, timeout))
    except RedisError as exc:
        logger.error("Cannot take a jwks_uri fetch lock: the cache is unreachable")
        raise JwksError("The server cannot fetch the client's keys right now; try again.") from exc


def _unlock(key: str) -> None:
    try:
        cache.delete(key)
    except RedisError:
        logger.warning("Cannot release a jwks_uri fetch lock; it expires on its own")
