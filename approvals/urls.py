from django.urls import path

from approvals import api, pwa, views

app_name = "approvals"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("user-code/", views.user_code, name="user-code"),
    path("<uuid:pk>/", views.detail, name="detail"),
    path("<uuid:pk>/decide/", views.decide, name="decide"),
    path("l/<str:token>/", views.link, name="link"),
    path("automated/", views.automated_decision, name="automated"),
    path("devices/", api.DeviceListView.as_view(), name="devices"),
    path("devices/<int:pk>/remove/", api.DeviceRemoveView.as_view(), name="device-remove"),
    path("devices/vapid-public-key/", api.VapidPublicKeyView.as_view(), name="vapid-public-key"),
    path("hooks/twilio/<uuid:delivery_id>/", views.twilio_status, name="twilio-status"),
    path("devices/enrol/", pwa.enrol, name="enrol"),
    path("pending.json", api.PendingRequestsView.as_view(), name="pending-json"),
]
