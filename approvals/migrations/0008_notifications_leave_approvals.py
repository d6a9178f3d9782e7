"""Client notifications (ping and push) belong to the OAuth side now: their models leave approvals' state here and
another app takes over the same tables, rows and all. Nothing changes in the database in this migration."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0007_request_notification_binding"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="NotificationAttempt"),
                migrations.DeleteModel(name="Notification"),
            ],
            database_operations=[],
        ),
    ]
