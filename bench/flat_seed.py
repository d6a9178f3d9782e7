"""The flat-cost phase's (bench/phases/flatness.py) writer of bulk data, run as `python -m bench.flat_seed <command>`
from the repository's root with the server's environment (DJANGO_SETTINGS_MODULE, DATABASE_URL, REDIS_URL, ...), so
that it writes exactly where the gunicorn it serves reads. It prints one line of JSON.

- pending: N pending requests as bc-authorize stores them (the request row, its CREATED audit event, no
  RequestCallback: a poll client has none) plus their poll mirror entries, written in bulk: bulk_create in batches
  and the mirror SETs pipelined, with the project's own functions for the auth_req_id, the mirror's key and value.
- check: what the phase compares between seeded and real requests (rows, events, mirror entries), and decisions
  made with the service's own approval_request_decide.
- history: an hour of traffic already decided or expired (issue 17 item 3 b), INSERT ... SELECT generate_series
  into the real tables, then VACUUM ANALYZE and a CHECKPOINT.

A tool of the benchmark, not of the service: it is never imported by the service, and the service never calls it.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any


def setup_django() -> None:
    import django

    django.setup()


# -------------------------------------------------------------------------------------------------------- pending


def seed_pending(
    count: int, client_id: str, username: str, expiry: int, spread: int, ids_out: str, sample: int
) -> dict[str, Any]:
    """`count` pending requests created over the last `spread` seconds, each asking for `expiry` seconds (a client
    may ask for up to MAX_EXPIRY_SECONDS; 100,000 requests can only be pending at once if they wait that long).
    Also returns the mean MEMORY USAGE (every element) of `sample` of the mirror entries written."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone
    from oauth2_provider.models import get_application_model

    from approvals.conf import approvals_settings
    from approvals.models import ApprovalRequest, AuditEvent
    from approvals.services import generate_auth_req_id
    from approvals.store import redis_store
    from authz.ciba.poll import pending_entry, request_ref, status_key
    from authz.ciba.request import request_lifetime
    from authz.conf import authz_settings

    store = redis_store()
    if store is None:
        raise SystemExit("the cache is not Redis: there is no poll mirror to seed")
    client = get_application_model().objects.get(client_id=client_id)
    user = get_user_model().objects.get(username=username)
    lifetime = timedelta(seconds=request_lifetime(expiry))
    grace = timedelta(seconds=approvals_settings.PROMPT_SWEEP_GRACE_SECONDS)
    interval = authz_settings.POLL_INTERVAL_SECONDS
    scope = "openid"
    now = timezone.now()
    first = now - timedelta(seconds=spread)
    step = timedelta(seconds=spread / max(count, 1))
    db_seconds = redis_seconds = 0.0
    batch = 2000
    keys: list[str] = []
    with open(ids_out, "w") as out:
        for start in range(0, count, batch):
            # As approval_request_create builds them (approvals.services), binding messages apart.
            requests = [
                ApprovalRequest(
                    auth_req_id=generate_auth_req_id(),
                    client=client,
                    user=user,
                    scope=scope,
                    hint_type=ApprovalRequest.HintType.LOGIN_HINT,
                    binding_message=f"Pay invoice {k}: 120 EUR",
                    acr_values="",
                    requested_expiry=expiry,
                    authorization_details=[],
                    interval=interval,
                    created_at=first + k * step,
                    expires_at=first + k * step + lifetime,
                    prompt_due_at=first + k * step + grace,
                )
                for k in range(start, min(start + batch, count))
            ]
            events = [
                AuditEvent(
                    request_id=r.pk,
                    kind=AuditEvent.Kind.CREATED,
                    at=r.created_at,
                    detail={"client_id": client.client_id, "scope": scope},
                )
                for r in requests
            ]
            t0 = time.monotonic()
            with transaction.atomic():
                ApprovalRequest.objects.bulk_create(requests)
                AuditEvent.objects.bulk_create(events)
            t1 = time.monotonic()
            # mirror_pending's entry, one pipelined round trip per batch instead of one SET per request.
            written = timezone.now()
            pipe = store.client.pipeline(transaction=False)
            for r in requests:
                value, ttl = pending_entry(
                    client_id=client.client_id, expires_at=r.expires_at, interval=r.interval, now=written
                )
                key = store.key(status_key(request_ref(r.auth_req_id)))
                pipe.set(key, value, ex=ttl)
                keys.append(key)
            pipe.execute()
            db_seconds += t1 - t0
            redis_seconds += time.monotonic() - t1
            out.write("".join(f"{r.auth_req_id}\n" for r in requests))
    chosen = keys[:: max(1, len(keys) // max(sample, 1))][:sample]
    sizes = [store.client.memory_usage(key, samples=0) or 0 for key in chosen]
    return {
        "count": count,
        "db_seconds": db_seconds,
        "redis_seconds": redis_seconds,
        "sample_key_bytes": sum(sizes) / max(len(sizes), 1),
    }


# ---------------------------------------------------------------------------------------------------------- check


def describe(auth_req_id: str) -> dict[str, Any]:
    """A request as a poll sees it: its row (times relative to created_at), its audit events, its mirror entry."""
    from approvals.models import ApprovalRequest
    from approvals.store import redis_store
    from authz.ciba.poll import request_ref, status_key

    r = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    row: dict[str, Any] = {}
    for f in ApprovalRequest._meta.concrete_fields:
        value = getattr(r, f.attname)
        if isinstance(value, datetime):
            value = (value - r.created_at).total_seconds()
        row[f.attname] = value if value is None or isinstance(value, int | float | str | list | dict) else str(value)
    events = [[e.kind, e.detail, e.actor_id, (e.at - r.created_at).total_seconds()] for e in r.events.all()]
    store = redis_store()
    mirror: list[Any] = [None, None]
    if store is not None:
        key = store.key(status_key(request_ref(auth_req_id)))
        value = store.client.get(key)
        mirror = [value.decode() if isinstance(value, bytes) else value, store.client.ttl(key)]
    return {"row": row, "events": events, "mirror": mirror}


def check(describe_ids: list[str], approve: list[str], deny: list[str]) -> dict[str, Any]:
    from approvals.models import ApprovalRequest
    from approvals.services import approval_request_decide

    described = {i: describe(i) for i in describe_ids}
    decided = {}
    for ids, verdict in ((approve, True), (deny, False)):
        for auth_req_id in ids:
            r = ApprovalRequest.objects.select_related("user").get(auth_req_id=auth_req_id)
            decided[auth_req_id] = approval_request_decide(approval_request_id=r.pk, user=r.user, approve=verdict)
    return {"described": described, "decided": decided}


# -------------------------------------------------------------------------------------------------------- history

# An hour of traffic as it is left an hour later, by share of requests (of 100): tokens issued, denied, never
# decided (expired by the sweeper), cancelled by an admin. Those whose decision or expiry is still ahead of `now`
# are pending. Every request was prompted (console channel) 40 ms after it was created.
HISTORY_MIX = {"consumed": 60, "denied": 10, "expired": 29, "cancelled": 1}

# Who decides how (decided_via), and which channel reached the person (prompt_channel), by i: half of the decisions
# through the prompt's link, half on the signed-in page; SMS, Web Push and the console in turn, and 2 % of the
# requests never reached anybody (no channel, a failed delivery; those expire).
_HISTORY_SQL = """
WITH src AS (
  SELECT g.i, %(t0)s::timestamptz + make_interval(secs => g.i * %(step)s::float8) AS created,
         (g.i::bigint * 37) %% 100 AS bucket,
         (%(client_pks)s::int[])[(1 + (g.i::bigint * 7919) %% cardinality(%(client_pks)s::int[]))::int] AS client_pk,
         (%(user_pks)s::int[])[(1 + (g.i::bigint * 104729) %% cardinality(%(user_pks)s::int[]))::int] AS user_pk,
         (g.i::bigint * 13) %% 100 < 2 AS undelivered,
         (ARRAY['sms', 'webpush', 'console'])[1 + g.i %% 3] AS channel
  FROM generate_series(%(lo)s::int, %(hi)s::int) g(i)
),
shaped AS (
  SELECT i, created, client_pk, user_pk, undelivered, channel, i %% 2 = 0 AS by_link, CASE
    WHEN undelivered THEN
      CASE WHEN created + %(lifetime)s <= %(now)s THEN %(s_expired)s ELSE %(s_pending)s END
    WHEN bucket < %(b_consumed)s THEN
      CASE WHEN created + interval '20 s' <= %(now)s THEN %(s_consumed)s ELSE %(s_pending)s END
    WHEN bucket < %(b_denied)s THEN
      CASE WHEN created + interval '15 s' <= %(now)s THEN %(s_denied)s ELSE %(s_pending)s END
    WHEN bucket < %(b_expired)s THEN
      CASE WHEN created + %(lifetime)s <= %(now)s THEN %(s_expired)s ELSE %(s_pending)s END
    ELSE CASE WHEN created + interval '60 s' <= %(now)s THEN %(s_cancelled)s ELSE %(s_pending)s END
  END AS status
  FROM src
),
r AS (
  INSERT INTO approvals_approvalrequest (id, auth_req_id, scope, binding_message, acr_values, hint_type,
    requested_expiry, status, interval, created_at, expires_at, prompted_at, decided_at, consumed_at, auth_time, acr,
    access_token_id, client_id, user_id, prompt_claimed_until, prompt_due_at, prompt_failed_at, link_used_at,
    authorization_details, decided_by_id, decided_via, prompt_channel)
  SELECT gen_random_uuid(),
    -- 32 random bytes in base64url without padding: the shape of secrets.token_urlsafe(32)
    translate(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'base64'), '+/=', '-_'),
    'openid', 'Pay invoice ' || i || ': 120 EUR', '', %(hint)s, NULL, status, %(interval)s, created,
    created + %(lifetime)s, CASE WHEN NOT undelivered THEN created + interval '40 ms' END,
    CASE WHEN status IN (%(s_consumed)s, %(s_denied)s) THEN created + interval '15 s'
         WHEN status = %(s_cancelled)s THEN created + interval '60 s'
         WHEN status = %(s_expired)s THEN created + %(lifetime)s END,
    CASE WHEN status = %(s_consumed)s THEN created + interval '20 s' END,
    CASE WHEN status IN (%(s_consumed)s, %(s_denied)s) THEN created + interval '10 s' END,
    CASE WHEN status IN (%(s_consumed)s, %(s_denied)s) THEN %(acr)s ELSE '' END,
    NULL, client_pk, user_pk, NULL, created + %(prompt_due)s,
    CASE WHEN undelivered THEN created + interval '2 s' END,
    CASE WHEN status IN (%(s_consumed)s, %(s_denied)s) AND by_link THEN created + interval '15 s' END,
    '[]'::jsonb,
    CASE WHEN status IN (%(s_consumed)s, %(s_denied)s) THEN user_pk END,
    CASE WHEN status IN (%(s_consumed)s, %(s_denied)s) THEN CASE WHEN by_link THEN 'link' ELSE 'page' END
         WHEN status = %(s_expired)s THEN 'expiry' WHEN status = %(s_cancelled)s THEN 'admin' ELSE '' END,
    CASE WHEN undelivered THEN '' ELSE channel END
  FROM shaped ORDER BY i
  RETURNING id, status, created_at, decided_at, consumed_at, expires_at, link_used_at, user_id, client_id,
    prompt_channel, prompt_failed_at
),
d AS (
  INSERT INTO approvals_delivery (id, request_id, channel, destination, subscription_id, attempt, status, provider_id,
    provider_status, error, created_at, finished_at, updated_at)
  SELECT gen_random_uuid(), r.id, COALESCE(NULLIF(r.prompt_channel, ''), 'sms'),
    COALESCE(NULLIF(r.prompt_channel, ''), 'sms') || ':' || r.user_id, NULL, 1,
    CASE WHEN r.prompt_failed_at IS NULL THEN 'sent' ELSE 'rejected' END, '', '',
    CASE WHEN r.prompt_failed_at IS NULL THEN '' ELSE 'The provider refused the destination.' END,
    r.created_at + interval '10 ms', r.created_at + interval '40 ms', r.created_at + interval '40 ms'
  FROM r
)
INSERT INTO approvals_auditevent (kind, at, detail, actor_id, request_id)
SELECT e.kind, e.at, e.detail, e.actor, r.id FROM r CROSS JOIN LATERAL (VALUES
  (%(k_created)s, r.created_at,
   jsonb_build_object('client_id', (SELECT client_id FROM oauth2_provider_application a WHERE a.id = r.client_id),
                      'scope', 'openid'), NULL::int, true),
  (%(k_prompted)s, r.created_at + interval '40 ms', jsonb_build_object('channel', r.prompt_channel, 'destinations', 1),
   NULL, r.prompt_failed_at IS NULL),
  (%(k_prompt_failed)s, r.prompt_failed_at, '{}'::jsonb, NULL, r.prompt_failed_at IS NOT NULL),
  (%(k_link_opened)s, r.link_used_at - interval '5 s', '{}'::jsonb, NULL, r.link_used_at IS NOT NULL),
  (%(k_approved)s, r.decided_at, %(d_decided)s::jsonb, r.user_id, r.status = %(s_consumed)s),
  (%(k_consumed)s, r.consumed_at, %(d_consumed)s::jsonb, NULL, r.status = %(s_consumed)s),
  (%(k_refreshed)s, r.consumed_at + interval '5 min', '{}'::jsonb, NULL, r.status = %(s_consumed)s),
  (%(k_refreshed)s, r.consumed_at + interval '10 min', '{}'::jsonb, NULL, r.status = %(s_consumed)s),
  (%(k_denied)s, r.decided_at, %(d_decided)s::jsonb, r.user_id, r.status = %(s_denied)s),
  (%(k_expired)s, r.expires_at, '{}'::jsonb, NULL, r.status = %(s_expired)s),
  (%(k_cancelled)s, r.decided_at, '{}'::jsonb, NULL, r.status = %(s_cancelled)s)
) e(kind, at, detail, actor, keep)
WHERE e.keep ORDER BY e.at
"""


def history(
    rows: int, client_ids: list[str], usernames: list[str], chunk: int, parallel: int, hours: float = 1.0
) -> dict[str, Any]:
    """`rows` requests created evenly over the `hours` before now, spread over the given agents and approvers, shaped
    as the service leaves them (HISTORY_MIX and _HISTORY_SQL's notes), with their audit trails and prompt deliveries;
    inserted with every index in place, so the indexes grow as they do under real traffic."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from oauth2_provider.models import get_application_model

    from approvals.conf import approvals_settings
    from approvals.links import ACR_SESSION
    from approvals.models import ApprovalRequest, AuditEvent
    from authz.ciba.request import request_lifetime
    from authz.conf import authz_settings

    client_pks = list(get_application_model().objects.filter(client_id__in=client_ids).values_list("pk", flat=True))
    user_pks = list(get_user_model().objects.filter(username__in=usernames).values_list("pk", flat=True))
    if len(client_pks) != len(set(client_ids)) or len(user_pks) != len(set(usernames)):
        raise SystemExit("history: unknown client_id or username")
    now = timezone.now()
    Status, Kind = ApprovalRequest.Status, AuditEvent.Kind
    bounds, upto = {}, 0
    for status, share in HISTORY_MIX.items():
        upto += share
        bounds[f"b_{status}"] = upto
    params: dict[str, Any] = {
        **bounds,
        "t0": now - timedelta(hours=hours),
        "step": hours * 3600.0 / max(rows, 1),
        "now": now,
        "lifetime": timedelta(seconds=request_lifetime(None)),
        # The prompt task's due_after() for a prompt sent at creation (approvals.prompts).
        "prompt_due": timedelta(
            seconds=approvals_settings.PROMPT_CLAIM_SECONDS + approvals_settings.PROMPT_SWEEP_GRACE_SECONDS
        ),
        "interval": authz_settings.POLL_INTERVAL_SECONDS,
        "hint": ApprovalRequest.HintType.LOGIN_HINT.value,
        "acr": ACR_SESSION,
        "client_pks": client_pks,
        "user_pks": user_pks,
        **{f"s_{s.value}": s.value for s in Status},
        **{f"k_{k.value}": k.value for k in Kind},
        # The details the service writes: approval_request_create, the prompt task, decide, attach_token.
        "d_decided": json.dumps({"acr": ACR_SESSION}),
        "d_consumed": json.dumps({"access_token_id": 1, "token_checksum_prefix": "0123456789ab"}),
    }
    ranges = [(lo, min(lo + chunk - 1, rows)) for lo in range(1, rows + 1, chunk)]

    def insert(span: tuple[int, int]) -> None:
        try:
            with connection.cursor() as cursor:
                # The bulk load's own commits need not wait for the disk; what the server commits later still does.
                cursor.execute("SET synchronous_commit = off")
                cursor.execute(_HISTORY_SQL, {**params, "lo": span[0], "hi": span[1]})
        finally:
            connection.close()  # each thread has its own connection

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(insert, ranges))
    inserted = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE approvals_approvalrequest")
        cursor.execute("VACUUM ANALYZE approvals_auditevent")
        cursor.execute("VACUUM ANALYZE approvals_delivery")
        vacuumed = time.monotonic()
        # The load's dirty pages written now rather than by a checkpoint during the measured runs.
        cursor.execute("CHECKPOINT")
        cursor.execute("SELECT status, count(*) FROM approvals_approvalrequest GROUP BY status ORDER BY status")
        statuses = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM approvals_auditevent")
        events = cursor.fetchone()[0]
    return {
        "rows": rows,
        "statuses": statuses,
        "events": events,
        "insert_seconds": inserted - started,
        "vacuum_seconds": vacuumed - inserted,
        "checkpoint_seconds": time.monotonic() - vacuumed,
    }


def population(agents: int, approvers: int) -> tuple[list[str], list[str]]:
    """`agents` poll clients (bench-agent-<i>, "Agent <i>") and `approvers` approvers (approver-<i>, each with a
    phone), in bulk: a many-agent, many-person history for the admin's pages (issue 18) to search and filter."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from oauth2_provider.models import get_application_model

    from approvals.models import Approver
    from authz.models import CibaClient

    Application, User = get_application_model(), get_user_model()
    secret = make_password(secrets.token_urlsafe(24))  # never used: the pages are read, not the agents
    apps = Application.objects.bulk_create(
        [
            Application(
                client_id=f"bench-agent-{i}",
                name=f"Agent {i}",
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
                client_secret=secret,
                hash_client_secret=False,
            )
            for i in range(agents)
        ]
    )
    CibaClient.objects.bulk_create([CibaClient(application=app) for app in apps])
    users = User.objects.bulk_create(
        [User(username=f"approver-{i}", email=f"approver-{i}@example.com", password="!") for i in range(approvers)]
    )
    Approver.objects.bulk_create([Approver(user=user, phone_number=f"+4477009{i:05d}") for i, user in enumerate(users)])
    return [a.client_id for a in apps], [u.username for u in users]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flat_seed")
    sub = p.add_subparsers(dest="command", required=True)
    pending = sub.add_parser("pending")
    pending.add_argument("--count", type=int, required=True)
    pending.add_argument("--client-id", required=True)
    pending.add_argument("--username", required=True)
    pending.add_argument("--expiry", type=int, required=True)
    pending.add_argument("--spread", type=int, required=True)
    pending.add_argument("--ids-out", required=True)
    pending.add_argument("--sample", type=int, default=1000)
    checking = sub.add_parser("check")
    ids = lambda text: [item for item in text.split(",") if item]  # noqa: E731 (auth_req_ids hold no comma)
    checking.add_argument("--describe", type=ids, default=[])
    checking.add_argument("--approve", type=ids, default=[])
    checking.add_argument("--deny", type=ids, default=[])
    hist = sub.add_parser("history")
    hist.add_argument("--rows", type=int, required=True)
    hist.add_argument("--client-id", action="append", required=True, help="repeat, or see --population")
    hist.add_argument("--username", action="append", required=True)
    hist.add_argument("--hours", type=float, default=1.0)
    hist.add_argument("--chunk", type=int, default=100_000)
    hist.add_argument("--parallel", type=int, default=2)
    many = sub.add_parser("admin-history", help="agents and approvers in bulk, then their history (issue 18)")
    many.add_argument("--rows", type=int, required=True)
    many.add_argument("--agents", type=int, required=True)
    many.add_argument("--approvers", type=int, required=True)
    many.add_argument("--hours", type=float, required=True)
    many.add_argument("--chunk", type=int, default=100_000)
    many.add_argument("--parallel", type=int, default=2)
    args = p.parse_args(argv)
    setup_django()
    if args.command == "pending":
        out = seed_pending(
            args.count, args.client_id, args.username, args.expiry, args.spread, args.ids_out, args.sample
        )
    elif args.command == "check":
        out = check(args.describe, args.approve, args.deny)
    elif args.command == "admin-history":
        client_ids, usernames = population(args.agents, args.approvers)
        out = history(args.rows, client_ids, usernames, args.chunk, args.parallel, args.hours)
    else:
        out = history(args.rows, args.client_id, args.username, args.chunk, args.parallel, args.hours)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
