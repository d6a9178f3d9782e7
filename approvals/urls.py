from django.urls import path

from approvals import pwa, views

app_name = "approvals"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("user-code/", views.user_code, name="user-code"),
    path("<uuid:pk>/", views.detail, name="detail"),
    path("<uuid:pk>/decide/", views.decide, name="decide"),
    path("l/<str:token>/", views.link, name="link"),
    path("automated/", views.automated_decision, name="automated"),
    path("devices/", views.device_list, name="devices"),
    path("devices/<int:pk>/remove/", views.device_remove, name="device-remove"),
    path("devices/vapid-public-key/", views.vapid_public_key, name="vapid-public-key"),
    path("hooks/twilio/<uuid:delivery_id>/", views.twilio_status, name="twilio-status"),
    path("devices/enrol/", pwa.enrol, name="enrol"),
    path("pending.json", pwa.pending_json, name="pending-json"),
]
