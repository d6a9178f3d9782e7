"""The protocol endpoints, mounted in DOT's `oauth2_provider` namespace so DOT's own views and discovery code
resolve them (see config/urls.py)."""

from django.urls import path, re_path
from oauth2_provider import views as dot_views

from authz import views
from authz.clients.registration.views import RegistrationManagementView, RegistrationView
from authz.tokens.introspection import IntrospectTokenView

oauth_patterns = [
    re_path(
        r"^\.well-known/openid-configuration/?$",
        views.ConnectDiscoveryInfoView.as_view(),
        name="oidc-connect-discovery-info",
    ),
    path(
        ".well-known/oauth-authorization-server", views.OAuthServerMetadataView.as_view(), name="oauth-server-metadata"
    ),
    path("oauth/bc-authorize/", views.BackchannelAuthenticationView.as_view(), name="bc-authorize"),
    path("oauth/token/", views.TokenView.as_view(), name="token"),
    path("oauth/authorize/", dot_views.AuthorizationView.as_view(), name="authorize"),
    path("oauth/introspect/", IntrospectTokenView.as_view(), name="introspect"),
    path("oauth/revoke/", dot_views.RevokeTokenView.as_view(), name="revoke-token"),
    path("oauth/userinfo/", views.UserInfoView.as_view(), name="user-info"),
    path("oauth/jwks/", dot_views.JwksInfoView.as_view(), name="jwks-info"),
    # RFC 7591 and RFC 7592; DOT's names, so its metadata and registration_client_uri find them.
    path("oauth/register/", RegistrationView.as_view(), name="dcr-register"),
    path(
        "oauth/register/<str:client_id>/",
        RegistrationManagementView.as_view(),
        name="dcr-register-management",
    ),
]
