"""Test settings: the real settings module, pointed at PostgreSQL and Redis on 127.0.0.1.

Outside CI, a machine without PostgreSQL or Redis falls back to SQLite and process memory, and the tests that need
the real servers skip. In CI (CI=true) nothing falls back: a missing server fails the run.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/countersign")
# One Redis database per xdist worker (15, 14, …): tests clear the cache, which flushes the whole database.
_WORKER_INDEX = int(WORKER.removeprefix("gw") or 0) if WORKER.startswith("gw") else 0
REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{15 - _WORKER_INDEX % 8}")
HAVE_POSTGRES = IN_CI or _reachable(DATABASE_URL, 5432)
HAVE_REDIS = IN_CI or _reachable(REDIS_URL, 6379)

os.environ["DATABASE_URL"] = DATABASE_URL if HAVE_POSTGRES else "sqlite:///:memory:"
os.environ["REDIS_URL"] = REDIS_URL if HAVE_REDIS else ""
os.environ["CELERY_BROKER_URL"] = "memory://"
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-only-" + "x" * 40)
if "OIDC_RSA_PRIVATE_KEY" not in os.environ:
    _key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ["OIDC_RSA_PRIVATE_KEY"] = _key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

from config.settings import *  # noqa: E402,F403
from config.settings import APPROVALS, CACHES, DATABASES  # noqa: E402

DATABASES["default"]["CONN_MAX_AGE"] = 0
if HAVE_REDIS:
    CACHES["default"]["KEY_PREFIX"] = f"countersign-test-{WORKER}"

APPROVALS = {
    **APPROVALS,
    "PROMPT_CHANNELS": ["approvals.channels.locmem.LocmemChannel"],
    # Tests send many requests for one person; the abuse limit has its own tests.
    "PROMPTS_PER_MINUTE": 10_000,
    "PROMPTS_PER_PERSON_PER_MINUTE": 10_000,
    "MAX_PENDING_PER_PERSON": 10_000,
    "WEBPUSH": {**APPROVALS["WEBPUSH"], "ALLOW_LOOPBACK_HTTP": True},
    # Agents' notification endpoints in tests are fakes on http://127.0.0.1 (tests/fakes/agent_endpoint.py).
    "OUTBOUND_ALLOW_LOOPBACK_HTTP": True,
}
# Tests register many clients from one address; the registration rate limit has its own tests.
REGISTRATIONS_PER_ADDRESS_PER_HOUR = 0
REGISTRATIONS_PER_HOUR = 0
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
PUBLIC_URL = "http://testserver"
# Tests never pay for PBKDF2 on people's passwords; client secrets use their own hasher regardless.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "authz.clients.hashers.ClientSecretHasher"]
ALLOWED_HOSTS = ["*"]
