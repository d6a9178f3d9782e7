"""Countersign settings: everything that differs between deployments comes from the environment.

Embedded defaults (no environment at all) give a working development server: SQLite, tasks run in-process,
prompts printed to the console, a throwaway signing key in ./var. Production sets DEBUG off, SECRET_KEY,
DATABASE_URL, REDIS_URL and an OIDC signing key; `manage.py check --deploy` refuses the development secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, overload

import environ
from csp.constants import NONE, SELF

# Grant type URNs; plain strings, importable before Django is set up.
from authz import constants

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("COUNTERSIGN_VAR_DIR", BASE_DIR / "var"))

env = environ.Env()

DEV_SECRET_KEY = "django-insecure-countersign-development-only"


@overload
def env_secret(name: str, default: str = "") -> str: ...
@overload
def env_secret(name: str, default: None) -> str | None: ...
def env_secret(name: str, default: str | None = "") -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


# What a reader called with default=_UNSET gives for a variable that is not set. Not None: for a default of None,
# django-environ also answers None for a variable set to the empty string, and a variable that is set, even empty,
# means what it meant before the apps held the defaults (APPROVALS_PROMPT_CHANNELS= is no channel, refused by check
# E102, not the console channel that prints every approval link; an empty number fails at start-up).
_UNSET: Any = object()


def env_set(**values: Any) -> dict[str, Any]:
    """The settings whose variable is set (a reader called with default=_UNSET, or env_secret with None, gives that
    for one that is not): the others are left out, so that an app's conf.py holds each default once."""
    return {key: value for key, value in values.items() if value is not _UNSET and value is not None}


DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env_secret("SECRET_KEY", DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The issuer defaults to the URL the server is reached at; set COUNTERSIGN_ISSUER in production so that tokens
# never depend on a Host header (e.g. https://auth.example.com).
ISSUER = env.str("COUNTERSIGN_ISSUER", default="").rstrip("/")
# Where approvers' links point: the public origin of this server.
PUBLIC_URL = env.str("COUNTERSIGN_PUBLIC_URL", default=ISSUER or "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "oauth2_provider",
    "approvals",
    "authz",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads a parameter: PostgreSQL cannot hold NUL, so no parameter with one reaches a view.
    "config.middleware.RefuseNulMiddleware",
    # Django's session, CSRF, auth and messages middlewares, skipped on the token and backchannel endpoints (machines
    # only, with client credentials; the hottest paths): config.middleware.MACHINE_ENDPOINT_PATHS.
    "config.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.middleware.CsrfViewMiddleware",
    "config.middleware.AuthenticationMiddleware",
    "config.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Cache-Control: no-store on every page and JSON answer of the approvals URLs (they show approval requests).
    "approvals.middleware.NoStoreMiddleware",
    # django-csp's, with the policy built once per process.
    "config.middleware.CSPMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'countersign.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # Agents poll every few seconds: reuse connections instead of paying a handshake per request.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    # A persistent connection is checked before a request's first query, so a database restart costs no failed
    # request; DB_CONN_HEALTH_CHECKS=false saves that round trip where restarts are handled otherwise.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)

REDIS_URL = env.str("REDIS_URL", default="")

# Poll-rate state (slow_down) lives in the cache, so a pending poll writes nothing to the database. Redis in any
# multi-process deployment; process memory only for the single-process embedded server.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "countersign",
            # A stalled Redis must slow a request by a second at most; callers fall back to the database.
            "OPTIONS": {
                "socket_timeout": env.float("REDIS_SOCKET_TIMEOUT", default=1.0),
                "socket_connect_timeout": env.float("REDIS_SOCKET_TIMEOUT", default=1.0),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Django's ModelBackend with sign-in throttling shared with the step-up password (approvals.attempts).
AUTHENTICATION_BACKENDS = ["approvals.backends.ThrottledModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The first hasher is the default for people's passwords. Client secrets are machine-generated with full entropy,
# so they use a salted SHA-256 (OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"]) instead of a million PBKDF2 rounds.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    "authz.clients.hashers.ClientSecretHasher",
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "approvals:inbox"
LOGOUT_REDIRECT_URL = "login"

# Django REST framework serves the approver's JSON endpoints (approvals.api) and checks registration metadata
# (authz.clients.registration.serializers). JSON only (no browsable API), the signed-in session only (with its CSRF
# check; no Basic passwords), and nobody without one unless a view says so.
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

# Security headers; the approver pages tighten these further in later issues.
SECURE_CONTENT_TYPE_NOSNIFF = True
# same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts, which Django's CSRF
# check must refuse. No page carries a secret in its URL (the prompt link's own response, which does, is
# no-referrer and only redirects), and no referrer ever goes to another origin.
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline scripts or styles anywhere (templates load approvals/static/*.js); the pages cannot be framed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "worker-src": [SELF],
        "manifest-src": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _oidc_private_key() -> str:
    """The server's RSA signing key: from the environment, else a development key kept in ./var."""
    pem = env_secret("OIDC_RSA_PRIVATE_KEY")
    if pem:
        return pem
    path = VAR_DIR / "oidc_rsa_private_key.pem"
    if path.exists():
        return path.read_text()
    if not DEBUG and not env.bool("COUNTERSIGN_DEV_KEY", default=False):
        return ""  # authz.checks reports the missing key
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(pem)
    return pem


# RFC 7591 §3: who may register clients at /oauth/register/ (authz.clients.registration). "initial_access_token"
# (default): a bearer token from `manage.py create_registration_token`; "open": anyone; "off": no registration endpoint.
REGISTRATION_MODE = env.str("COUNTERSIGN_REGISTRATION_MODE", default="initial_access_token")
if REGISTRATION_MODE not in ("initial_access_token", "open", "off"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("COUNTERSIGN_REGISTRATION_MODE must be initial_access_token, open or off.")
# Registrations a client address, and all addresses together, may attempt per hour (authz.clients.registration);
# 0: no limit.
REGISTRATIONS_PER_ADDRESS_PER_HOUR = env.int("COUNTERSIGN_REGISTRATIONS_PER_ADDRESS_PER_HOUR", default=10)
REGISTRATIONS_PER_HOUR = env.int("COUNTERSIGN_REGISTRATIONS_PER_HOUR", default=100)

# Access tokens are random strings ("opaque", checked through /oauth/introspect/) or RS256 JWTs (RFC 9068, "jwt")
# that resource servers can verify offline with /oauth/jwks/. Refresh tokens stay random either way (oauthlib would
# otherwise generate them with the access token generator).
ACCESS_TOKEN_FORMAT = env.str("ACCESS_TOKEN_FORMAT", default="opaque")
if ACCESS_TOKEN_FORMAT not in ("opaque", "jwt"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("ACCESS_TOKEN_FORMAT must be opaque or jwt.")
ACCESS_TOKEN_GENERATORS = (
    {
        "ACCESS_TOKEN_GENERATOR": "authz.tokens.access.signed_access_token",
        "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    }
    if ACCESS_TOKEN_FORMAT == "jwt"
    else {}
)

# DOT's models are used as they are (not swapped); naming them lets migrations reference them as swappable.
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
OAUTH2_PROVIDER_DEVICE_GRANT_MODEL = "oauth2_provider.DeviceGrant"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": _oidc_private_key(),
    "OIDC_SERVER_CLASS": "authz.server.CountersignServer",
    "OAUTH2_VALIDATOR_CLASS": "authz.validators.CountersignValidator",
    "CLIENT_SECRET_HASHER": "countersign_sha256",
    "SCOPES": {
        "openid": "Confirm who you are",
        "profile": "See your name and username",
        "email": "See your email address",
        "phone": "See your phone number",
        "offline_access": "Keep access while you are away",
        "introspection": "Check whether tokens are valid",
    },
    "DEFAULT_SCOPES": ["openid"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("ACCESS_TOKEN_EXPIRE_SECONDS", default=600),
    "ID_TOKEN_EXPIRE_SECONDS": env.int("ID_TOKEN_EXPIRE_SECONDS", default=600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("REFRESH_TOKEN_EXPIRE_SECONDS", default=86400),
    "PKCE_REQUIRED": True,
    # RFC 9700 (OAuth 2.0 Security BCP), every gate DOT 3.4 has. TOKEN_STORAGE: access, refresh and registration
    # access tokens are stored as their SHA-256 only (DOT's token_checksum; the token column stays empty), so a
    # database copy holds no usable token. The others refuse the implicit and password grants, PKCE "plain" and access
    # tokens in query strings, add RFC 9207 `iss`, and make `check --deploy` fail on the settings RFC 9700 rules out.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    # Each refresh answers a new refresh token (DOT's default, stated here because docs/agents.md promises it); its
    # lifetime counts from the person's approval, not from the last refresh (CountersignValidator).
    "ROTATE_REFRESH_TOKEN": True,
    # RFC 9700 section 4.14.2: a rotated refresh token presented again revokes its whole family. No grace period:
    # it would have to return the previous token, which is no longer stored.
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    # CIBA clients have no redirect URIs; none may be plain http.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    # Dynamic client registration (RFC 7591/7592) through authz.clients.registration; DCR_ENABLED puts
    # registration_endpoint in the metadata. Registration access tokens (RFC 7592 section 3) rotate on every update
    # and expire REGISTRATION_ACCESS_TOKEN_EXPIRE_SECONDS after they were issued (docs/agents.md).
    "DCR_ENABLED": REGISTRATION_MODE != "off",
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("authz.clients.registration.tokens.RegistrationModePermission",),
    "DCR_REGISTRATION_SCOPE": "oauth2_provider:registration",
    "DCR_REGISTRATION_TOKEN_EXPIRE_SECONDS": env.int("REGISTRATION_ACCESS_TOKEN_EXPIRE_SECONDS", default=30 * 86400),
    "DCR_ROTATE_REGISTRATION_TOKEN_ON_UPDATE": True,
    "OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": [
        constants.AUTHORIZATION_CODE_GRANT_TYPE,
        constants.CLIENT_CREDENTIALS_GRANT_TYPE,
        constants.REFRESH_TOKEN_GRANT_TYPE,
        constants.CIBA_GRANT_TYPE,
        constants.TOKEN_EXCHANGE_GRANT_TYPE,
    ],
    # Keeps repeated audience values of token exchange requests (RFC 8693 §2.1); see authz.server.
    "OAUTH2_BACKEND_CLASS": "authz.server.CountersignOAuthLibCore",
    **ACCESS_TOKEN_GENERATORS,
}

# Countersign's own tunables, one namespace per app, each default written once in the app's conf.py: AUTHZ, the
# protocol's (authz.conf.authz_settings), and APPROVALS, the human side's (approvals.conf.approvals_settings). Only
# the variables that are set appear here; their names predate the split, so AUTHZ's keep the APPROVALS_ prefix.
AUTHZ = env_set(
    DEFAULT_EXPIRY_SECONDS=env.int("APPROVALS_DEFAULT_EXPIRY_SECONDS", default=_UNSET),
    MAX_EXPIRY_SECONDS=env.int("APPROVALS_MAX_EXPIRY_SECONDS", default=_UNSET),
    POLL_INTERVAL_SECONDS=env.int("APPROVALS_POLL_INTERVAL_SECONDS", default=_UNSET),
    USER_CODE_SUPPORTED=env.bool("APPROVALS_USER_CODE_SUPPORTED", default=_UNSET),
    MAX_REQUEST_BYTES=env.int("APPROVALS_MAX_REQUEST_BYTES", default=_UNSET),
    NOTIFICATION_DEADLINE_SECONDS=env.int("APPROVALS_NOTIFICATION_DEADLINE_SECONDS", default=_UNSET),
)
APPROVALS = env_set(
    PROMPT_CHANNELS=env.list("APPROVALS_PROMPT_CHANNELS", default=_UNSET),
    # Development only: let ping/push clients register http://127.0.0.1 callbacks (system check E108 with DEBUG off).
    OUTBOUND_ALLOW_LOOPBACK_HTTP=env.bool("APPROVALS_OUTBOUND_ALLOW_LOOPBACK_HTTP", default=_UNSET),
    AUTOMATED_APPROVAL_SECRET=env_secret("APPROVALS_AUTOMATED_APPROVAL_SECRET", None),
    AUTOMATED_APPROVAL_IN_PRODUCTION=env.bool("APPROVALS_AUTOMATED_APPROVAL_IN_PRODUCTION", default=_UNSET),
    PROMPTS_PER_MINUTE=env.int("APPROVALS_PROMPTS_PER_MINUTE", default=_UNSET),
    PROMPTS_PER_PERSON_PER_MINUTE=env.int("APPROVALS_PROMPTS_PER_PERSON_PER_MINUTE", default=_UNSET),
    MAX_PENDING_PER_PERSON=env.int("APPROVALS_MAX_PENDING_PER_PERSON", default=_UNSET),
    # Days the audit trail is kept before `manage.py purge_audit_events` deletes it; 0: forever.
    AUDIT_RETENTION_DAYS=env.int("APPROVALS_AUDIT_RETENTION_DAYS", default=_UNSET),
    PROMPT_TIMEOUT_SECONDS=env.float("APPROVALS_PROMPT_TIMEOUT_SECONDS", default=_UNSET),
    # Off by default: staff and superuser accounts are not people agents may ask (docs/approvers.md).
    STAFF_APPROVERS=env.bool("APPROVALS_STAFF_APPROVERS", default=_UNSET),
    # Client addresses for lockouts and audit: a client's own X-Forwarded-For is never believed unless a trusted
    # proxy is configured to set this header (docs/configuration.md).
    CLIENT_IP_HEADER=env.str("COUNTERSIGN_CLIENT_IP_HEADER", default=_UNSET),
    TRUSTED_PROXY_COUNT=env.int("COUNTERSIGN_TRUSTED_PROXY_COUNT", default=_UNSET),
    # Always present (maybe empty): approvals_settings merges a partial dict into its defaults.
    TWILIO=env_set(
        ACCOUNT_SID=env.str("TWILIO_ACCOUNT_SID", default=_UNSET),
        AUTH_TOKEN=env_secret("TWILIO_AUTH_TOKEN", None),
        FROM_NUMBER=env.str("TWILIO_FROM_NUMBER", default=_UNSET),
        MESSAGING_SERVICE_SID=env.str("TWILIO_MESSAGING_SERVICE_SID", default=_UNSET),
        API_BASE=env.str("TWILIO_API_BASE", default=_UNSET),
        STATUS_CALLBACKS=env.bool("TWILIO_STATUS_CALLBACKS", default=_UNSET),
    ),
    WEBPUSH=env_set(
        VAPID_PRIVATE_KEY=env_secret("VAPID_PRIVATE_KEY", None),
        VAPID_PUBLIC_KEY=env.str("VAPID_PUBLIC_KEY", default=_UNSET),
        VAPID_SUBJECT=env.str("VAPID_SUBJECT", default=_UNSET),
        ALLOWED_SERVICES=env.list("WEBPUSH_ALLOWED_SERVICES", default=_UNSET),
        ALLOW_LOOPBACK_HTTP=env.bool("WEBPUSH_ALLOW_LOOPBACK_HTTP", default=_UNSET),
    ),
)

# Celery: with no broker configured, tasks run in-process (the embedded default). Eager tasks still pass through a
# producer of the broker connection; a memory:// URL without a host makes kombu warn "No hostname was supplied" on
# every one, so the embedded broker names one.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL) or "memory://"
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL.startswith("memory://")
if CELERY_TASK_ALWAYS_EAGER:
    CELERY_BROKER_URL = "memory://localhost/"
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Connections are recycled per task by config/celery.py (CONN_MAX_AGE, health checks), not closed by Celery's fixup.
CELERY_DB_REUSE_MAX = 1_000_000
# Cancelling a prompt task mid-call on a broker hiccup would leave its delivery "sending" and send the prompt again.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fail fast when the broker is down at enqueue time; the request is already stored and the sweeper catches up.
# visibility_timeout: a task taken by a worker that died (acks_late) is delivered again after this long; the prompt
# sweeper usually gets there first. It must exceed the longest retry countdown (PROMPT_RETRY_MAX_SECONDS).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "visibility_timeout": 300,
}
CELERY_BEAT_SCHEDULE = {
    # Prompts whose task was never enqueued (broker down) or was lost (worker killed).
    "sweep-unprompted-requests": {"task": "approvals.tasks.sweep_unprompted_task", "schedule": 10.0},
    # Ping/push callbacks whose task never ran or whose retry was lost.
    "sweep-client-notifications": {"task": "authz.tasks.sweep_notifications_task", "schedule": 10.0},
    "expire-due-approval-requests": {"task": "approvals.tasks.expire_due_task", "schedule": 30.0},
    # Bounds how long a decision that could not reach Redis stays hidden behind the poll mirror's "pending".
    "resettle-poll-mirror": {"task": "authz.tasks.resettle_mirror_task", "schedule": 30.0},
    # Keeps the admin's overview page fast: its settled hours are read once, then from the cache (authz.review).
    "warm-review-overview": {"task": "authz.tasks.warm_review_overview_task", "schedule": 300.0},
}

# config.logs.configure applies LOGGING after installing a record factory that redacts credentials (client secrets,
# tokens, auth_req_ids, approval links, the automated-approval secret) from every record of every logger.
LOGGING_CONFIG = "config.logs.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # DOT logs client ids and request bodies at DEBUG; never let secrets reach logs.
        "oauth2_provider": {"level": "WARNING"},
        "oauthlib": {"level": "WARNING"},
        # twilio logs each request's body (the approval link) at INFO.
        "twilio": {"level": "WARNING"},
        # A 4xx is an answer (authorization_pending on every poll), not an incident.
        "django.request": {"level": "ERROR"},
        # SQL and its parameters (auth_req_ids, notification tokens) at DEBUG when DEBUG is on: never logged.
        "django.db.backends": {"level": "INFO"},
    },
}
