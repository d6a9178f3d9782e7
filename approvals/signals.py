"""approval_request_changed: how a transition leaves approvals. The OAuth side listens (the poll mirror, ping and
push); approvals knows nothing of who listens.

Sent by approvals.services inside the transaction that makes the transition, right after its conditional UPDATE
won, with:
- approval_request_id: the request's primary key;
- status: the new status (ApprovalRequest.Status), PENDING for a new request;
- previous: the status it left, None for a new request;
- at: the moment of the transition;
- approval_request: the ApprovalRequest itself when the sender holds it (a new request), else None.

Receivers run inside that transaction: what they write to the database commits or rolls back with the transition
(a ping owed to a client is never lost between the commit and a handler), and anything outside the database they
defer with transaction.on_commit. A receiver that raises rolls the transition back.
"""

from __future__ import annotations

from django.dispatch import Signal

approval_request_changed = Signal()
