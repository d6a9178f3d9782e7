from __future__ import annotations

import json
import secrets
import shlex
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from approvals.models import Approver
from authz.constants import CIBA_GRANT_TYPE
from authz.models import CibaClient

DEMO_CLIENT_ID = "demo-agent"
DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Create (or refresh) a demo approver and a demo agent client, and print how to try a CIBA approval."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default=settings.PUBLIC_URL)
        parser.add_argument("--json", action="store_true", help="print only the credentials, as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        password = secrets.token_urlsafe(12)
        client_secret = generate_client_secret()
        Application = get_application_model()
        User = get_user_model()
        with transaction.atomic():
            user, _ = User.objects.get_or_create(username=DEMO_USERNAME, defaults={"email": "demo@example.com"})
            user.set_password(password)
            user.save()
            Approver.objects.get_or_create(user=user, defaults={"phone_number": "+14155550100"})
            application, _ = Application.objects.get_or_create(
                client_id=DEMO_CLIENT_ID,
                defaults={
                    "name": "Demo agent",
                    "client_type": Application.CLIENT_CONFIDENTIAL,
                    "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
                    "algorithm": Application.RS256_ALGORITHM,
                },
            )
            # Secrets are stored hashed, so a fresh one is issued each time the demo is started.
            application.client_secret = client_secret
            application.save()
            CibaClient.objects.get_or_create(application=application)

        credentials = {
            "approver": {"username": DEMO_USERNAME, "password": password},
            "agent": {"client_id": DEMO_CLIENT_ID, "client_secret": client_secret},
        }
        if options["json"]:
            self.stdout.write(json.dumps(credentials))
            return
        base = options["base_url"].rstrip("/")
        auth = shlex.quote(f"{DEMO_CLIENT_ID}:{client_secret}")
        self.stdout.write(
            f"""
Countersign demo
================
Approver (sign in at {base}/approvals/):
  username: {DEMO_USERNAME}
  password: {password}

Agent client (client_secret_basic):
  client_id:     {DEMO_CLIENT_ID}
  client_secret: {client_secret}

1. Ask for approval (the prompt and its link are printed in this terminal):
curl -s -u {auth} -d 'scope=openid profile' -d login_hint={DEMO_USERNAME} \\
     --data-urlencode 'binding_message=Order 4711' {base}/oauth/bc-authorize/

2. Open the printed link and tap Approve (the link decides that one request and signs no one in).
   Then poll with the auth_req_id from step 1:
curl -s -u {auth} -d grant_type={CIBA_GRANT_TYPE} \\
     -d auth_req_id=AUTH_REQ_ID {base}/oauth/token/
"""
        )
