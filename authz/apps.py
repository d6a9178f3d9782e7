from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class AuthzConfig(AppConfig):
    name = "authz"
    verbose_name = "Authorization server"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from oauth2_provider.models import get_application_model

        from approvals import agents
        from approvals.signals import approval_request_changed
        from approvals.text import validate_client_name
        from authz import checks  # noqa: F401  (registers system checks)
        from authz.ciba import poll
        from authz.clients.directory import CibaDirectory
        from authz.models import CibaClient
        from authz.review import roles
        from authz.tasks import notify_client_on_change

        # What approvals shows of an agent comes from here (approvals.agents), and decisions come back by signal:
        # the poll mirror first (it settles before the commit), then the ping or push owed to the client.
        agents.use_directory(CibaDirectory())
        approval_request_changed.connect(poll.on_approval_request_changed, dispatch_uid="countersign-poll-mirror")
        approval_request_changed.connect(notify_client_on_change, dispatch_uid="countersign-notify")

        # DOT's Application is not swapped, so its name field gets the one client-name rule here: registration, the
        # admin and create_agent_client all validate through it (approvals.text).
        name_field = get_application_model()._meta.get_field("name")
        if validate_client_name not in name_field.validators:
            name_field.validators.append(validate_client_name)

        # The staff roles' permissions, set from authz.review.roles after every migrate (Django creates permissions
        # only then). Connected for authz, installed after every app the roles name, whose permissions exist by then.
        post_migrate.connect(roles.on_post_migrate, sender=self, dispatch_uid="countersign-staff-roles")

        # A client edited anywhere (admin, shell, commands) must not keep passing the poll fast path on old data.
        for model in (get_application_model(), CibaClient):
            post_save.connect(poll.forget_saved_client, sender=model, dispatch_uid=f"forget-client-{model.__name__}")
            post_delete.connect(
                poll.forget_saved_client, sender=model, dispatch_uid=f"forget-client-del-{model.__name__}"
            )
