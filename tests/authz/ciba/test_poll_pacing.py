"""Poll pacing behaves the same on Redis (one Lua round trip) and on any other Django cache (the embedded server)."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches

from approvals.store import redis_store
from authz.ciba.poll import poll_permitted, request_ref

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle-test"}}


@pytest.fixture(params=["configured", "locmem"])
def backend(request, settings):
    if request.param == "locmem":
        settings.CACHES = LOCMEM
        assert type(caches["default"]).__name__ == "LocMemCache"
    elif request.param == "configured":
        from tests import settings as test_settings

        if not test_settings.HAVE_REDIS:
            pytest.skip("Redis is not reachable (required in CI)")
    caches["default"].clear()
    return caches["default"]


def test_first_poll_is_permitted_and_early_polls_slow_down_in_steps_of_five(backend):
    request_id = str(uuid.uuid4())

    assert poll_permitted(auth_req_id=request_id, interval=5, lifetime=300) == (True, 5)
    assert poll_permitted(auth_req_id=request_id, interval=5, lifetime=300) == (False, 10)
    assert poll_permitted(auth_req_id=request_id, interval=5, lifetime=300) == (False, 15)


def test_after_the_interval_a_poll_is_permitted_at_the_longer_interval(backend):
    request_id = str(uuid.uuid4())
    poll_permitted(auth_req_id=request_id, interval=5, lifetime=300)
    poll_permitted(auth_req_id=request_id, interval=5, lifetime=300)

    backend.delete(f"ciba:poll:{request_ref(request_id)}")  # the interval has passed

    assert poll_permitted(auth_req_id=request_id, interval=5, lifetime=300) == (True, 10)


def test_requests_are_paced_independently(backend):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    assert poll_permitted(auth_req_id=first, interval=5, lifetime=300)[0] is True
    assert poll_permitted(auth_req_id=second, interval=5, lifetime=300)[0] is True
    assert poll_permitted(auth_req_id=first, interval=5, lifetime=300)[0] is False


@pytest.mark.redis
def test_the_gate_lasts_exactly_the_interval_on_redis():
    backend = caches["default"]
    request_id = str(uuid.uuid4())
    poll_permitted(auth_req_id=request_id, interval=7, lifetime=300)
    client = redis_store().client

    assert client.ttl(backend.make_and_validate_key(f"ciba:poll:{request_ref(request_id)}")) == 7


@pytest.mark.redis
def test_pacing_survives_redis_forgetting_its_scripts():
    """After a Redis restart or SCRIPT FLUSH, EVALSHA answers NOSCRIPT; the poll must still be paced, not fail."""
    request_id = str(uuid.uuid4())
    redis_store().client.script_flush()

    assert poll_permitted(auth_req_id=request_id, interval=5, lifetime=300) == (True, 5)
    assert poll_permitted(auth_req_id=request_id, interval=5, lifetime=300) == (False, 10)


def test_a_refused_poll_never_waits_past_the_end_of_the_request(backend):
    request_id = str(uuid.uuid4())
    answers = [poll_permitted(auth_req_id=request_id, interval=5, lifetime=12) for _ in range(5)]

    # The interval still grows by 5 s per slow_down (CIBA Core 11), but the wait told is capped at the 12 s left.
    assert answers == [(True, 5), (False, 10), (False, 12), (False, 12), (False, 12)]
    assert backend.get(f"ciba:interval:{request_ref(request_id)}") == 25
