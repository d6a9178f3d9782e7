"""Cache-Control for every approvals URL (issue 15): the request page, its link, the inbox and pending.json show
who asks what of whom. A browser or proxy must not keep them (RFC 9111 section 5.2.2.5, no-store): a shared phone's
back button or a later visitor would see a decided request, or one a forwarded link showed."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control


class NoStoreMiddleware:
    """no-store on every response of a view in the `approvals` URL namespace, errors and redirects included, so no
    view can forget it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None and "approvals" in match.namespaces:
            # Merged with what a view set (patch_cache_control), and no-store alone suffices: it forbids keeping
            # any copy at all, so no max-age or revalidation directive adds anything.
            patch_cache_control(response, no_store=True)
        return response
