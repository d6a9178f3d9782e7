"""Countersign benchmark: one command, `make bench` (or `.venv/bin/python -m bench`, from the repository's root).

It creates a fresh PostgreSQL database, migrates it, registers an approver and an agent client through the management
commands, starts the service as production runs it (gunicorn gthread workers, DEBUG off, PostgreSQL, Redis cache and
Celery broker) on a free loopback port, and drives it with wrk (closed loop, fixed concurrency):

  a. ceiling          GET  /healthz/             (no backend touched), measured first and again last
  b. backchannel      POST /oauth/bc-authorize/  (Basic auth, scope=openid, login_hint, binding_message)
  c. pending polls    POST /oauth/token/         (CIBA grant, round-robin over a pool of pending auth_req_ids)
  d. ratio            pending-poll req/s / mean ceiling req/s, target >= 60 %
  e. rows written     PostgreSQL tuple counters around the pending-poll phase, target 0
  peer                (issue 17) ours and node-oidc-provider 9 with Redis (../shared/peer) alternately, with the peer's
                      bench-peer.sh: backchannel requests and polls of one pending id; medians of the ratios ours/peer,
                      verdicts against >= 0.4x (bc-authorize) and >= 0.6x (polls), p99 <= 2x; memory
  f. prompts          (issue 3) a fresh gunicorn with the Twilio SMS channel aimed at a fake Twilio in this process, a
                      real Celery worker, bc-authorize at a steady 50/s for 30 s (open loop): bc-authorize's answer
                      -> SMS accepted by the fake, p50 < 150 ms, p99 < 1 s, none lost
  g. ping             (issue 5) a ping client whose notification endpoint is a fake agent endpoint in this process, a
                      real Celery worker, the approver approving pending requests at a steady 20/s (open loop):
                      decide POST sent -> ping received by the fake, p50 < 100 ms, none lost

Redis: unless --redis-port is given, the benchmark starts its own redis-server on a free port and stops it at the
end (the test suite flushes the system Redis's databases). The abuse limits are off for every phase
(APPROVALS_PROMPTS_PER_MINUTE, APPROVALS_PROMPTS_PER_PERSON_PER_MINUTE and APPROVALS_MAX_PENDING_PER_PERSON = 0).

bench/RESULTS.md is rewritten at the end of each successful run; raw wrk output, the gunicorn log and a JSON copy of
the results go to bench/out/ (ignored by git). Only 127.0.0.1 is ever targeted; every load run is bounded in time.

The package: __main__ and cli (options, exit code), runner (a run: checks, set-up, phases, report), phases/ (one `Phase`
each: closed_loop a-e, peer (issue 17), prompts f, ping g; base holds the interface and the context they share,
open_loop what f and g share: the measured run, the wait for arrivals and their statistics), load (wrk and the open-loop
generator), servers (redis-server, gunicorn, Celery worker, manage.py), postgres (the database and its statistics),
system (CPU accounting, machine facts), report (the one writer of RESULTS.md and the JSON), common.
"""
