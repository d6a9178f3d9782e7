from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(ignore_result=True)
def prompt_approver_task(approval_request_id: str) -> None:
    services.approval_request_prompt(approval_request_id=approval_request_id)


@shared_task(ignore_result=True)
def expire_due_task() -> int:
    return services.approval_request_expire_due()


@shared_task(ignore_result=True)
def resettle_mirror_task() -> int:
    return services.approval_request_resettle_mirror()
