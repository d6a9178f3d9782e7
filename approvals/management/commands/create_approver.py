from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction

from approvals import services
from approvals.models import Approver
from approvals.phones import normalize_e164


class Command(BaseCommand):
    help = "Create (or update) a person who approves agents' requests. Prints the approver as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--phone", default="", help="E.164, e.g. +14155550100")
        parser.add_argument("--user-code", default="", help="CIBA user_code agents must present (optional)")

    def handle(self, *args: Any, **options: Any) -> None:
        phone = ""
        if options["phone"]:
            phone = normalize_e164(options["phone"]) or ""
            if not phone:
                raise CommandError(f"Not a valid international phone number: {options['phone']!r}")
        if options["email"]:
            try:
                validate_email(options["email"])
            except ValidationError as exc:
                raise CommandError(f"Not a valid email address: {options['email']!r}") from exc
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=options["username"])
            if options["email"]:
                user.email = options["email"]
            user.set_password(options["password"])
            user.save()
            approver, _ = Approver.objects.get_or_create(user=user)
            if phone:
                services.approver_set_phone(approver=approver, phone_number=phone)
            if options["user_code"]:
                services.approver_set_user_code(approver=approver, user_code=options["user_code"])
        self.stdout.write(
            json.dumps(
                {
                    "id": user.pk,
                    "username": user.get_username(),
                    "email": user.email,
                    "phone_number": approver.phone_number,
                    "user_code_set": approver.has_user_code,
                    "created": created,
                }
            )
        )
