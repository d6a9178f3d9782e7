from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from approvals import checks  # noqa: F401 (registers the system checks)
        from approvals.links import on_password_login
        from approvals.signals import approval_request_changed
        from approvals.tasks import prompt_new_request

        user_logged_in.connect(on_password_login, dispatch_uid="countersign-auth-level")
        approval_request_changed.connect(prompt_new_request, dispatch_uid="countersign-prompt-new-request")
