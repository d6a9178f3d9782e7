"""Issue 15, finding 6, for every text an agent puts in front of a person: a binding message, like a client name and
authorization_details (tests/security/test_client_names.py, test_details_rendering.py), may not stack combining marks
("Zalgo" text spills over the lines of the page above and below it)."""

from __future__ import annotations

import pytest

from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db


def test_a_binding_message_may_not_stack_combining_marks(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="Pay ACME" + "\u0301" * 12)

    body = assert_oauth_error(response, 400, "invalid_binding_message")
    assert "combining marks" in body["error_description"]


@pytest.mark.parametrize("message", ["Thanh toán cho Nguyễn", "Zahlung an Müller", "भुगतान करें"])
def test_real_scripts_keep_their_marks(agent, approver, message):
    assert agent.bc_authorize(scope="openid", login_hint="alice", binding_message=message).status_code == 200
