"""The agent directory approvals asks (approvals.agents): an agent's website, its verification and its prompt
channels from its CibaClient row, and the RFC 9396 types' headings and display templates. Registered at start-up
(authz.apps), so that approvals never looks authz up."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from approvals.agents import AgentProfile, DetailType
from authz.models import AuthorizationDetailType, CibaClient


class CibaDirectory:
    def profile(self, client: Any) -> AgentProfile:
        fields = ("website", "website_verified", "prompt_channels")
        ciba = CibaClient.objects.filter(application_id=client.pk).only(*fields).first()
        if ciba is None:
            return AgentProfile()
        return AgentProfile(
            website=ciba.website,
            website_verified=ciba.website_verified,
            prompt_channels=tuple(ciba.prompt_channel_names),
        )

    def detail_types(self, names: Iterable[str]) -> dict[str, DetailType]:
        kinds = AuthorizationDetailType.objects.filter(type__in=set(names), enabled=True)
        return {k.type: DetailType(type=k.type, name=k.name, display_template=k.display_template) for k in kinds}
