from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("countersign")
# CELERY_* settings; with no broker configured, CELERY_TASK_ALWAYS_EAGER runs tasks in-process.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _recycle_database_connections(task: Any = None, **kwargs: Any) -> None:
    """Treat each task like a web request: keep the connection for CONN_MAX_AGE, drop it if broken.

    Celery's Django fixup otherwise closes every connection after every task (unless CELERY_DB_REUSE_MAX is set,
    which settings.py does): the benchmark saw one new PostgreSQL session per prompt, the largest single cost.
    """
    from django.db import close_old_connections

    if task is not None and task.request.is_eager:
        return  # in-process: the caller's connection, possibly inside its transaction
    close_old_connections()
