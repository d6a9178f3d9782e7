"""A fast hasher for machine-generated client secrets.

An agent authenticates on every poll. Client secrets are 128 random characters (far beyond brute force), so a
salted SHA-256 protects a leaked database as well as PBKDF2 would, at a microsecond instead of half a CPU-second.
People's passwords keep Django's slow default hasher; this one is only chosen through
OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"].
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_noop as _

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


class ClientSecretHasher(BasePasswordHasher):
    algorithm = "countersign_sha256"
    # Django's hashers' shared argument check; private, so django-stubs leave it out.
    _check_encode_args: Callable[[str, str], None]

    def encode(self, password: str, salt: str) -> str:
        self._check_encode_args(password, salt)
        digest = hashlib.sha256(f"{salt}${password}".encode()).hexdigest()
        return f"{self.algorithm}${salt}${digest}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, salt, digest = encoded.split("$", 2)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "hash": digest, "salt": salt}

    def verify(self, password: str, encoded: str) -> bool:
        decoded = self.decode(encoded)
        return constant_time_compare(encoded, self.encode(password, decoded["salt"]))

    def safe_summary(self, encoded: str) -> dict[StrOrPromise, Any]:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"],
            _("salt"): mask_hash(decoded["salt"]),
            _("hash"): mask_hash(decoded["hash"]),
        }

    def harden_runtime(self, password: str, encoded: str) -> None:
        pass


_hasher = ClientSecretHasher()
_DUMMY = _hasher.encode("dummy-secret", _hasher.salt())


def verify_client_secret(provided: str, stored: str) -> bool:
    """Check a presented client secret against its stored form, never through the slow password hashers."""
    if stored.startswith(f"{ClientSecretHasher.algorithm}$"):
        return _hasher.verify(provided, stored)
    # Secrets stored by another hasher (e.g. created before this setting) must be re-issued; refuse them rather
    # than spend a PBKDF2 run per request. A plain (unhashed) DOT secret is compared in constant time.
    if "$" in stored:
        return False
    return bool(stored) and constant_time_compare(provided, stored)


def burn_verification() -> None:
    """Spend the time of one verification, so an unknown client_id answers as fast as a wrong secret."""
    _hasher.verify("dummy-secret", _DUMMY)
