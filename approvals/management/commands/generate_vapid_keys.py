from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.management.base import BaseCommand


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Command(BaseCommand):
    help = (
        "Generate a VAPID key pair for Web Push (RFC 8292) and print it as JSON: put VAPID_PRIVATE_KEY in the "
        "secrets, VAPID_PUBLIC_KEY in the environment. Changing the pair invalidates every browser subscription."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        private = key.private_numbers().private_value.to_bytes(32, "big")
        public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        self.stdout.write(json.dumps({"VAPID_PRIVATE_KEY": _b64url(private), "VAPID_PUBLIC_KEY": _b64url(public)}))
