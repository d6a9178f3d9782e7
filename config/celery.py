from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("countersign")
# CELERY_* settings; with no broker configured, CELERY_TASK_ALWAYS_EAGER runs tasks in-process.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
