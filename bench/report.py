"""The report: the one writer of bench/RESULTS.md and of the JSON copies in bench/out/ (results.json, or
prompts.json / ping.json for `--only`), and the console summary of a run."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, HOST, OUT_DIR, ROOT
from bench.load import Load
from bench.phases.base import PhaseResult, result_of
from bench.phases.closed_loop import (
    GAP_MARGIN_SECONDS,
    POLL_RATE_CEILING_SHARE,
    RATIO_TARGET,
    BcResult,
    PollResult,
    ceiling_ratio,
)
from bench.phases.open_loop import ArrivalStats
from bench.phases.peer import BC_TARGET, P99_LIMIT, POLL_TARGET, PeerResult
from bench.phases.ping import PING_P50_TARGET_MS, PingResult
from bench.phases.prompts import PROMPT_P50_TARGET_MS, PROMPT_P99_TARGET_MS, PROMPT_WORKER_NOTE, PromptResult
from bench.servers import ABUSE_LIMITS_OFF, redis_url
from bench.system import CLOSED_LOOP_CPU, OPEN_LOOP_CPU, QUIET_BUSY_PERCENT, fmt_cpu

RESULTS_MD = BENCH_DIR / "RESULTS.md"
# Settings the caller's environment may change for an experiment; RESULTS.md names them when set.
PASSED_THROUGH = ("DB_CONN_MAX_AGE", "DB_CONN_HEALTH_CHECKS", "LOG_LEVEL")
LIMITS_OFF = ", ".join(f"{k}={v}" for k, v in ABUSE_LIMITS_OFF.items())
OpenLoopResult = PromptResult | PingResult


@dataclass
class RunFacts:
    """What RESULTS.md states besides the phases' figures."""

    date: str
    elapsed: float  # seconds, the whole run
    machine: dict[str, str]
    versions: dict[str, str]
    background: tuple[float, list[str]]  # CPU busy % before the run, and the busiest processes
    own_redis: bool  # the benchmark's own redis-server (or one given with --redis-port)


# ------------------------------------------------------------------------------------------------ open-loop phases


def disturbance(cpu: dict[str, float], run: str) -> list[str]:
    """A caution line when processes outside the benchmark (or other guests) took CPU during an open-loop run."""
    taken = cpu["other"] + cpu["steal"]
    if taken <= 5:
        return []
    return [
        f"- Caution: during the {run} run {taken:.0f} % of the machine went to processes outside the benchmark or "
        "to other guests; gunicorn and the worker had that much less CPU, and at a fixed arrival rate that shows as "
        "queueing (higher latency), not as lower throughput."
    ]


def open_loop_verdict(r: OpenLoopResult, run: str, measured: str, target: str) -> list[str]:
    """A phase's verdict line (`measured`: the phase's name and what it measured), and a caution line when other
    processes took CPU during its run."""
    st = r.stats
    return [
        f"- {measured}: p50 **{st.p50_ms:.0f} ms**, p99 **{st.p99_ms:.0f} ms**, lost **{st.lost}**, "
        f"duplicates **{st.duplicates}** — target {target} — **{'MET' if r.target_met else 'NOT MET'}**.",
        *disturbance(r.cpu, run),
    ]


def open_loop_head(r: OpenLoopResult, title: str, verdict: list[str], latency: str) -> list[str]:
    """A phase's section up to its notes: the verdict again, and the table of its figures (`latency` names the
    row)."""
    st = r.stats
    sent, ok, received = r.counts
    return [
        f"## {title}",
        "",
        *verdict,
        "",
        f"| measured | p50 | p90 | p99 | max | min | {sent} | {ok} | {received} | lost | duplicates "
        "| CPU %: gunicorn / celery / pg / redis / bench / other / steal / busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {latency} | {st.p50_ms:.1f} | {st.p90_ms:.1f} | {st.p99_ms:.1f} | {st.max_ms:.1f} | {st.min_ms:.1f} | "
        f"{st.sent:,} | {st.ok:,} | {st.received:,} | {st.lost} | {st.duplicates} | {fmt_cpu(r.cpu, OPEN_LOOP_CPU)} |",
        "",
    ]


def error_kinds(st: ArrivalStats) -> str:
    """' (kind: count, ...)' to follow a count of errors, or nothing when there were none."""
    return f" ({', '.join(f'{k}: {v}' for k, v in st.error_kinds.items())})" if st.error_kinds else ""


def open_loop_json(r: OpenLoopResult) -> dict[str, Any]:
    """A phase's result as the JSON has it: its fields with the verdict, the stats' ok under the phase's own name."""
    ok = "answered_200" if isinstance(r, PromptResult) else "approved"
    stats = {ok if k == "ok" else k: v for k, v in vars(r.stats).items()}
    return {**vars(r), "stats": stats, "target_met": r.target_met}


def prompt_verdict(r: PromptResult, args: argparse.Namespace) -> list[str]:
    return open_loop_verdict(
        r,
        "prompt",
        f"Prompts: bc-authorize's answer to the SMS accepted by the fake Twilio, {args.prompt_rate:g} requests/s "
        f"for {args.prompt_duration} s",
        f"p50 < {PROMPT_P50_TARGET_MS} ms, p99 < {PROMPT_P99_TARGET_MS} ms, none lost (nor duplicated, nor refused)",
    )


def prompt_section(r: PromptResult, args: argparse.Namespace) -> list[str]:
    st = r.stats
    return [
        *open_loop_head(r, "Prompts (issue 3)", prompt_verdict(r, args), "bc-authorize answer → SMS at the fake (ms)"),
        f"- Load: open loop, {args.prompt_rate:g} POST /oauth/bc-authorize/ a second on a fixed schedule (achieved "
        f"{st.achieved_rate:.2f}/s; {st.late_sends} requests left more than 20 ms after their slot), "
        f"{args.prompt_warmup} s warm-up (not counted) then {args.prompt_duration} s measured; each request opens "
        "its own connection (form-encoded, client_secret_basic), from a pool of 64 threads so that slow answers "
        f"never hold back the next request. login_hint rotates over {r.approvers} approvers, each with a phone; "
        "each request carries a unique binding_message ('B' + its number), which the SMS quotes: that is how an "
        "SMS is matched to its request (the SMS has no auth_req_id, by design).",
        f"- bc-authorize itself during the run (send → answer read): p50 {st.answer_p50_ms:.1f} ms, p99 "
        f"{st.answer_p99_ms:.1f} ms; answers other than 200: {st.errors}{error_kinds(st)}.",
        "- Latency = the time the fake Twilio parsed the Messages.json request (time.time()) − the time the "
        "generator had read bc-authorize's 200 answer (time.time()), both in the benchmark's process; the task is "
        "queued when the request's transaction commits, before the answer is written, so a fast worker can beat "
        "the answer (a latency near or below 0).",
        f"- Lost = answered 200 but no SMS within {args.prompt_wait:g} s after the load stopped; duplicates = "
        f"requests with more than one SMS; {st.unmatched} SMS matched no request. Warm-up: "
        f"{r.warm[1]:,} of its {r.warm[0]:,} requests prompted by then.",
        f"- Worker: `{r.worker}` on the benchmark's Redis as broker, same environment as gunicorn; chosen: "
        f"{PROMPT_WORKER_NOTE}. gunicorn: {args.workers} gthread workers of 4 threads as above.",
        "- Prompt settings: APPROVALS_PROMPT_CHANNELS=approvals.channels.twilio_sms.TwilioSmsChannel, "
        "TWILIO_API_BASE=the fake's http://127.0.0.1:<port>, TWILIO_STATUS_CALLBACKS=false, random "
        f"TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN checked by the fake, {LIMITS_OFF} (the abuse limits: the "
        "rate counters are counted but out of reach and the pending cap is off in every phase, or they would refuse "
        "nearly all of the benchmark's requests).",
        f"- CPU: share of the whole machine during the measured {args.prompt_duration} s; celery = the worker's "
        "process group; bench = the benchmark's own process (load generator and fake Twilio); pg = the whole "
        "PostgreSQL server, backends that exited included (through the postmaster's children time), and so also "
        "other databases' clients, such as a test suite running meanwhile.",
        f"- PostgreSQL sessions opened during the measured run: {r.pg_sessions:,} for {st.sent:,} prompts "
        f"({r.pg_sessions / max(st.sent, 1):.2f} a prompt). Celery's Django fixup would close the worker's database "
        "connections after every task; config/celery.py recycles them like web requests instead (CONN_MAX_AGE), "
        "which removed a new PostgreSQL backend per prompt, until then the largest cost in the chain.",
        f"- Phase wall time {r.seconds:.0f} s (approvers, a fresh gunicorn and worker, smoke test, load, wait). "
        "Raw data: bench/out/prompts-requests.tsv, prompts-sms.tsv, celery.log, gunicorn-prompts.log.",
        "",
    ]


def ping_verdict(r: PingResult, args: argparse.Namespace) -> list[str]:
    return open_loop_verdict(
        r,
        "ping",
        f"Ping: the approver's decide POST to the ping received by the fake agent endpoint, {r.stats.sent} approvals "
        f"at {args.ping_rate:g}/s",
        f"p50 < {PING_P50_TARGET_MS} ms (none lost, duplicated or refused)",
    )


def ping_section(r: PingResult, args: argparse.Namespace) -> list[str]:
    st = r.stats
    return [
        *open_loop_head(
            r, "Ping delivery (issue 5)", ping_verdict(r, args), "decide POST sent → ping at the fake (ms)"
        ),
        f"- Load: a ping client (`create_agent_client --delivery-mode ping --notification-endpoint "
        "http://127.0.0.1:<port>/cb`, the fake agent endpoint of tests/fakes/agent_endpoint.py in the benchmark's "
        f"process, answering 204). {args.ping_warmup + st.sent:,} pending requests are created first "
        f"(bc-authorize, each with its own client_notification_token; {r.create_seconds:.1f} s), then the approver, "
        "signed in once through /accounts/login/ (so with a fresh-password session), approves them one after another: "
        f"open loop, {args.ping_rate:g} POST /approvals/<id>/decide/ a second on a fixed schedule (achieved "
        f"{st.achieved_rate:.2f}/s; {st.late_sends} left more than 20 ms after their slot) from a pool of 8 threads, "
        f"each on its own connection with the session and CSRF cookies; {args.ping_warmup} approvals of warm-up "
        f"(not counted; {r.warm[1]} of {r.warm[0]} pinged) then {st.sent:,} measured.",
        "- Latency = the time the fake parsed the ping (time.time()) − the time just before the decide POST was "
        "sent (time.time()), both in the benchmark's process, matched by the auth_req_id in the ping's body. It "
        "covers the whole decide request (session, CSRF, the transaction that writes the Notification), the task "
        "enqueued on commit, the worker's delivery (claim, attempt rows, the SSRF-checked POST) and the fake. "
        f"The decide answer itself (sent → 302 read): p50 {st.answer_p50_ms:.1f} ms, p99 {st.answer_p99_ms:.1f} ms; "
        f"ping after that answer: p50 {st.after_answer_p50_ms:.1f} ms.",
        f"- Approved = a 302 back to the request's page ({st.errors} other answers{error_kinds(st)}); the "
        f"database agrees: {r.db_approved:,} of the {st.sent:,} measured requests approved, {r.db_delivered:,} "
        f"notifications marked delivered. Lost = approved but no ping within {args.ping_wait:g} s after the last "
        f"approval; duplicates = requests pinged more than once; {st.bad_token} pings carried a Bearer token other "
        f"than the request's client_notification_token; {st.unmatched} pings matched no request.",
        f"- Worker: `{r.worker}` (as in the prompt phase), broker emptied first; the requests' own prompts (console "
        "channel) are all sent before the approvals start. gunicorn: a fresh one, "
        f"{args.workers} gthread workers of 4 threads. PostgreSQL sessions opened while measured: {r.pg_sessions}.",
        "- Setting for this phase only: APPROVALS_OUTBOUND_ALLOW_LOOPBACK_HTTP=true (for gunicorn, the worker and "
        "`create_agent_client`), so that the http://127.0.0.1 notification endpoint is accepted; production refuses "
        "it: with DEBUG off system check E108 flags the setting, so `create_agent_client` runs with `--skip-checks` "
        "(gunicorn and the worker run no system checks). The session "
        "and CSRF cookies are Secure with DEBUG off; the benchmark sends them itself over the plain-http loopback.",
        f"- Phase wall time {r.seconds:.0f} s. Raw data: bench/out/ping-approvals.tsv, ping-received.tsv, "
        "celery-ping.log, gunicorn-ping.log.",
        "",
    ]


# ------------------------------------------------------------------------------------------------------ the peer


def _verdict(met: bool | None) -> str:
    return "not measured in this run" if met is None else ("**MET**" if met else "**NOT MET**")


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def peer_verdicts(r: PeerResult) -> list[str]:
    bc, poll = r.ratios["backchannel"], r.ratios["token_poll"]
    v = r.verdicts()
    pending = r.pending_ratio
    pending_line = (
        f"**{pending[0]:.2f}×**, p99 **{pending[1]:.1f}×**" if pending else "(phase c did not run: `--only peer`)"
    )
    return [
        f"- Against the peer, bc-authorize: median of the ratios ours/peer **{bc.rps_median:.2f}×** req/s, p99 "
        f"**{bc.p99_median:.1f}×** — target ≥ {BC_TARGET}× and p99 ≤ {P99_LIMIT:g}× — {_verdict(v['backchannel'])}.",
        f"- Against the peer, token polls on one pending id (ours: `slow_down`): **{poll.rps_median:.2f}×** req/s, "
        f"p99 **{poll.p99_median:.1f}×** — target ≥ {POLL_TARGET}× and p99 ≤ {P99_LIMIT:g}× — "
        f"{_verdict(v['slow_down'])}.",
        f"- Against the peer, `authorization_pending` polls (phase c against the peer's one-id polls): {pending_line} "
        f"— target ≥ {POLL_TARGET}× and p99 ≤ {P99_LIMIT:g}× — {_verdict(v['authorization_pending'])}.",
    ]


def peer_section(r: PeerResult, args: argparse.Namespace, worker_rss: dict[str, dict[int, int]]) -> list[str]:
    label = {"backchannel": "bc-authorize", "token_poll": "token poll, one id"}
    rows = [
        f"| {run.pair} | {run.server} | {label[run.endpoint]} | {run.rps:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} "
        f"| {run.requests:,} | {run.non_2xx:,} | {run.socket_errors} |"
        for run in sorted(r.runs, key=lambda run: (run.endpoint, run.pair, run.server != "ours"))
    ]
    ratio_rows = [
        f"| {label[e]} | {' / '.join(f'{x:.2f}' for x in r.ratios[e].rps)} | **{r.ratios[e].rps_median:.2f}×** | "
        f"{' / '.join(f'{x:.1f}' for x in r.ratios[e].p99)} | **{r.ratios[e].p99_median:.1f}×** |"
        for e in label
    ]
    pending = r.pending_polls
    pending_note = (
        f"- `authorization_pending`: ours is phase c of this run (many pending requests, each polled again just "
        f"after its interval, {pending[2]} wrk connections): {pending[0]:,.0f} req/s, p99 {pending[1]:.2f} ms, "
        f"against the median of the peer's one-id polls above, {r.median('peer', 'token_poll', 'rps'):,.0f} req/s, "
        f"p99 {r.median('peer', 'token_poll', 'p99_ms'):.2f} ms. The peer never answers `slow_down`, so its one-id "
        "poll already is its `authorization_pending` answer, the same answer phase c gets from ours; that "
        "comparison is not alternated (phase c ran minutes earlier) and ours ran at its own concurrency, so it "
        "carries the machine's drift."
        if pending
        else "- `authorization_pending`: phase c did not run (`--only peer`), so there is no figure to compare."
    )
    mem = r.redis_memory
    ours_server = r.versions.get("Countersign in the peer phase", "").split(" (")[0]
    workers_rss = ", ".join(_mib(v) for v in r.gunicorn_rss_kib.values())
    return [
        "## Against the peer (issue 17)",
        "",
        *peer_verdicts(r),
        "",
        f"The peer's own `bench-peer.sh` (wrk, {r.connections} connections, 1 thread, 3 s warm-up, {r.duration} s "
        "measured; (1) backchannel requests, a new pending request each, login_hint `alice`, (2) token polls on one "
        "pending auth_req_id), run against each server in turn: ours, peer, ours, peer, ... "
        f"({len(r.ratios['backchannel'].rps)} pairs). The machine drifts 10-20 % over minutes, so each pair gives "
        "a ratio ours/peer and the verdict takes the median of the ratios, not of single figures.",
        "",
        "| pair | server | endpoint | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "| endpoint | req/s ratios ours/peer, per pair | median | p99 ratios ours/peer | median |",
        "| --- | --- | ---: | --- | ---: |",
        *ratio_rows,
        "",
        f"- The peer: node-oidc-provider with ADAPTER=redis (its models in db {args.peer_redis_db} of the "
        "benchmark's redis-server, flushed before and after), QUIET=1, installed with `npm ci` from "
        "../shared/peer into bench/out/peer-<hash>/ (kept for reruns). Ours: the shared gunicorn of phases a-c "
        f"({ours_server}), an approver `alice` and a poll client (client_secret_basic) created with the "
        "management commands. Non-2xx on the token polls is expected (both answers are 400s); the sample poll "
        f"after each run answered: ours `{r.poll_answers.get('ours', '?')}`, peer "
        f"`{r.poll_answers.get('peer', '?')}`. The peer buys part of its speed with correctness Countersign keeps "
        "(no atomic consume of an approved request, no `slow_down`).",
        pending_note,
        "- Raw output: bench/out/peer-runs/<pair>-<server>/ (wrk's and bench-peer.sh's), bench/out/peer.log.",
        "",
        "### Memory",
        "",
        f"- gunicorn web workers after the peer phase's runs (resident, VmRSS): {workers_rss} "
        f"(master {_mib(r.gunicorn_master_rss_kib)}); the peer's node process: {_mib(r.peer_rss_kib)}.",
        *[
            f"- Celery worker after the {phase} run, before it stopped: "
            f"{', '.join(_mib(v) for v in rss.values())} ({len(rss)} process{'es' if len(rss) > 1 else ''})."
            for phase, rss in worker_rss.items()
        ],
        f"- Redis memory per pending request, over {mem['ours'].count:,} bc-authorize requests on each server with "
        "nothing else running: MEMORY USAGE (all elements) of the keys they created, plus the growth of the lists: "
        f"ours **{mem['ours'].per_request:,.0f} bytes** ({mem['ours'].keys_added:,} keys added, "
        f"{mem['ours'].per_request_without_queue:,.0f} bytes a request, plus "
        f"{mem['ours'].queue_bytes / max(mem['ours'].count, 1):,.0f} bytes in the Celery broker's queue of prompt "
        "tasks, which a worker empties; none runs in this phase), the peer **"
        f"{mem['peer'].per_request:,.0f} bytes** ({mem['peer'].keys_added:,} keys added). INFO used_memory of the "
        f"whole redis-server grew by {mem['ours'].used_memory_delta / max(mem['ours'].count, 1):,.0f} and "
        f"{mem['peer'].used_memory_delta / max(mem['peer'].count, 1):,.0f} bytes a request: a coarser check, which "
        "also moves with the server's hash-table resizes and client buffers and nets out keys of earlier requests "
        f"that expired meanwhile ({mem['ours'].expired_meanwhile:,} and {mem['peer'].expired_meanwhile:,}).",
        "",
    ]


def peer_json(r: PeerResult) -> dict[str, Any]:
    return {
        **asdict(r),
        "medians": {e: {"rps_ratio": x.rps_median, "p99_ratio": x.p99_median} for e, x in r.ratios.items()},
        "pending_ratio": r.pending_ratio,
        "verdicts": r.verdicts(),
        "redis_bytes_per_pending": {k: v.per_request for k, v in r.redis_memory.items()},
    }


# ---------------------------------------------------------------------------------------------- closed-loop phases


def pool_warning(polls: Load, pool_size: int) -> list[str]:
    """Early polls or slow_down answers: the pool was too small for the rate reached, or polls came too early."""
    share = max(polls.early, polls.answers["slow_down"]) / max(polls.requests, 1)
    if share <= 0.01:
        return []
    return [
        f"- Caution: {100 * share:.1f} % of the measured polls were early or got slow_down (the pool of "
        f"{pool_size:,} pending requests ran out at {polls.rps:,.0f} polls/s, or answers were slow): these are not "
        "the figures of pending polls; run again with a larger --pool."
    ]


def disturbances(loads: dict[str, Load]) -> list[str]:
    """A warning line per measured run that other processes or the hypervisor took more than 5 % of the CPU."""
    notes = []
    for name, load in loads.items():
        taken = load.cpu["other"] + load.cpu["steal"]
        if taken > 5:
            notes.append(
                f"- Caution: during the {name} run {taken:.0f} % of the machine went to processes outside the "
                "benchmark or to other guests; that figure is lower than a quiet machine would give."
            )
    return notes


# -------------------------------------------------------------------------------------------------------- the files


def write_results(facts: RunFacts, args: argparse.Namespace, results: dict[str, PhaseResult]) -> None:
    """bench/RESULTS.md and bench/out/results.json, after a run of all the phases."""
    ceiling = result_of(results, "ceiling", Load)
    ceiling_after = result_of(results, "ceiling-after", Load)
    bcr = result_of(results, "bc-authorize", BcResult)
    pr = result_of(results, "pending-polls", PollResult)
    prompts = result_of(results, "prompts", PromptResult) if "prompts" in results else None
    ping = result_of(results, "ping", PingResult) if "ping" in results else None
    peer = result_of(results, "peer", PeerResult) if "peer" in results else None
    worker_rss = {
        name: r.worker_rss_kib
        for name, r in (("prompt", prompts), ("ping", ping))
        if r is not None and r.worker_rss_kib
    }
    bc = bcr.load
    polls = pr.load
    ceiling_rps, ratio = ceiling_ratio(ceiling, ceiling_after, polls)
    ratio_met = ratio >= RATIO_TARGET
    rows = sum(pr.rows.values())
    a = polls.answers
    poll_total = max(polls.requests, 1)

    def row(label: str, load: Load, errors: int) -> str:
        return (
            f"| {label} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p90_ms:.2f} | {load.p99_ms:.2f} | "
            f"{load.max_ms:.1f} | {load.requests:,} | {errors} | {fmt_cpu(load.cpu, CLOSED_LOOP_CPU)} |"
        )

    mix = ", ".join(
        f"{k.replace('_', ' ')} {v:,} ({100 * v / poll_total:.2f} %)" for k, v in a.items() if k != "status_ge_400"
    )
    bc_rows = bcr.rows
    bc_requests = bcr.requests_total
    lines = [
        "# Countersign benchmark results",
        "",
        f"Written by `python -m bench` (`make bench`) on {facts.date}; total run time {facts.elapsed:.0f} s.",
        "",
        "## Verdicts",
        "",
        f"- Pending polls reach **{100 * ratio:.1f} %** of the ceiling "
        f"({polls.rps:,.0f} req/s vs a ceiling of {ceiling_rps:,.0f} req/s, the mean of the runs before and after): "
        f"target at least {100 * RATIO_TARGET:.0f} % "
        f"— **{'MET' if ratio_met else 'NOT MET'}**.",
        f"- Rows written to PostgreSQL during the pending-poll phase ({pr.polls_made:,} polls, warm-up "
        f"included): **{rows}** — target 0 — **{'MET' if rows == 0 else 'NOT MET'}**"
        + (f" (by table: {pr.rows})" if rows else "")
        + ".",
        *(prompt_verdict(prompts, args) if prompts else []),
        *(ping_verdict(ping, args) if ping else []),
        *(peer_verdicts(peer) if peer else []),
        *pool_warning(polls, pr.pool_size),
        *disturbances({"ceiling": ceiling, "bc-authorize": bc, "pending polls": polls, "ceiling after": ceiling_after}),
        "",
        "## Figures",
        "",
        f"Closed loop, {args.concurrency} connections, {args.warmup} s warm-up then {args.duration} s measured per "
        "phase. Latency in ms, measured by wrk from writing the request to reading the whole response "
        "(queueing for a free worker included). CPU columns: share of the whole machine "
        f"({facts.machine['nproc']} cores = 100 %) during the measured run; other = processes outside the benchmark, "
        "steal = time the hypervisor gave to other guests (both should be near 0).",
        "",
        "| phase | req/s | p50 | p90 | p99 | max | requests | errors "
        "| CPU %: gunicorn / pg / redis / wrk / other / steal / busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        row("a. ceiling: GET /healthz/", ceiling, ceiling.answers["status_ge_400"] + ceiling.socket_errors),
        row("b. POST /oauth/bc-authorize/", bc, bc.answers["other"] + bc.socket_errors),
        row("c. pending polls: POST /oauth/token/ (CIBA)", polls, a["other"] + a["ok"] + polls.socket_errors),
        row(
            "a. ceiling again, after the polls",
            ceiling_after,
            ceiling_after.answers["status_ge_400"] + ceiling_after.socket_errors,
        ),
        "",
        f"- d. ratio pending polls / ceiling (the mean of both ceiling runs, {ceiling_rps:,.0f} req/s): "
        f"**{ratio:.3f}** ({100 * ratio:.1f} %), target ≥ {RATIO_TARGET:.2f}: **{'met' if ratio_met else 'not met'}**.",
        f"  The two ceiling runs differ by {100 * abs(ceiling.rps - ceiling_after.rps) / ceiling_rps:.0f} %: on a "
        "shared virtual machine the speed drifts by 10-20 % from minute to minute, so compare several runs "
        "rather than single figures.",
        f"- e. rows written (n_tup_ins + n_tup_upd + n_tup_del, pg_stat_user_tables) during the pending-poll phase: "
        f"**{rows}** (target 0).",
        f"- Poll answers (measured run): {mix}. {pr.ring:,} pending requests were being polled, each every "
        f"{pr.gap:.1f} s ({polls.grown:,} joined during the measured run; {polls.early:,} polls had to be made "
        f"early for want of fresh requests), out of a pool of {pr.pool_size:,}.",
        f"- PostgreSQL transactions during the measured polls: {pr.xacts_per_poll:.3f} a poll (pg_stat_database "
        "xact_commit + xact_rollback, a 1 s re-warm included; 0 would mean every pending poll was answered without "
        "PostgreSQL).",
        f"- Check that the row counter sees writes: the bc-authorize phase wrote {sum(bc_rows.values()):,} rows for "
        f"the {bc_requests:,} requests wrk counted ({sum(bc_rows.values()) / max(bc_requests, 1):.2f} a request; "
        f"the server also completes the few still queued when wrk stops): {bc_rows}.",
        "- errors = socket errors + unexpected answers (ceiling: any status ≥ 400; bc-authorize: anything but 200; "
        "polls: anything but authorization_pending or slow_down).",
        "",
        *(peer_section(peer, args, worker_rss) if peer else []),
        *(prompt_section(prompts, args) if prompts else []),
        *(ping_section(ping, args) if ping else []),
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in facts.machine.items()],
        f"- CPU busy before the run (2 s sample, nothing of the benchmark running): {facts.background[0]:.0f} %"
        + (f"; busiest: {', '.join(facts.background[1])}" if facts.background[0] > QUIET_BUSY_PERCENT else ""),
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in facts.versions.items()],
        *([f"- {k}: {v}" for k, v in peer.versions.items()] if peer else []),
        "",
        "## Server configuration",
        "",
        f"- gunicorn `config.wsgi`, {args.workers} gthread workers of 4 threads (the model of "
        f"config/gunicorn.conf.py), bound to {HOST} (a free port), access log "
        f"{'off' if args.no_access_log else 'on (stdout, as docker-compose.yml)'}; connections are kept alive.",
        "- DEBUG=false, random SECRET_KEY, freshly generated 2048-bit RSA key in OIDC_RSA_PRIVATE_KEY, "
        "COUNTERSIGN_ISSUER=http://127.0.0.1:<port>.",
        f"- Database: PostgreSQL at {HOST}:{args.pg_port}, database `{args.database}` dropped, recreated and "
        "migrated for the run; connection settings as settings.py makes them from the environment: "
        + (", ".join(f"{k}={os.environ[k]}" for k in PASSED_THROUGH if k in os.environ) or "its defaults")
        + ".",
        f"- Redis: {redis_url(args)} as the cache and the Celery broker (phases a-c: prompts queue up, no worker "
        "runs), flushed before and after; "
        + (
            "the benchmark's own redis-server (`--save '' --appendonly no`, a free port), started for the run and "
            "stopped after it, so the test suite's FLUSHDBs on the system Redis cannot reach it."
            if facts.own_redis
            else "an existing Redis given with --redis-port."
        )
        + f" {LIMITS_OFF} (the rate counters are counted but out of reach, the pending cap is off: the abuse limits"
        " would refuse the benchmark's requests).",
        "",
        "## Load generator",
        "",
        f"- {facts.versions['wrk']} with bench/wrk.lua, on the same machine: {args.threads} threads, "
        f"{args.concurrency} connections, {args.warmup} s warm-up + {args.duration} s per phase, timeout 10 s.",
        "- bc-authorize body: scope=openid, login_hint=<approver>, binding_message; Basic client authentication.",
        "- Pending polls: grant_type=urn:openid:params:grant-type:ciba for the pending requests that bc-authorize "
        "created, each wrk thread polling its own share like agents that honour the interval: a request is polled "
        f"again once {pr.gap:.1f} s have passed (its {pr.gap - GAP_MARGIN_SECONDS:.0f} s interval and "
        f"{GAP_MARGIN_SECONDS} s for queueing), and a request not polled yet is taken whenever none is due, so the "
        "number of requests being polled grows until the server is saturated. The pool is sized for polls at up to "
        f"{100 * POLL_RATE_CEILING_SHARE:.0f} % of the ceiling (topped up with more bc-authorize requests before "
        "the polls, outside the row counts). The warm-up fills the set of requests being polled (here "
        f"{pr.warmup_seconds:.0f} s, with the statistics readings and a 1 s re-warm), so the measured polls are "
        "repeat polls; the set carries over from run to run (bench/out/poll-state.txt).",
        "- Rows written: PostgreSQL 15 flushes a backend's counters lazily, so before each reading the service's "
        "database connections are ended (a backend flushes on exit) and the reading follows pg_stat_clear_snapshot().",
        "",
    ]
    RESULTS_MD.write_text("\n".join(lines))
    (OUT_DIR / "results.json").write_text(
        json.dumps(
            {
                "date": facts.date,
                "args": vars(args),
                "machine": facts.machine,
                "versions": facts.versions,
                "ceiling": vars(ceiling),
                "ceiling_after": vars(ceiling_after),
                "bc_authorize": vars(bc),
                "pending_polls": vars(polls),
                "ceiling_rps_mean": ceiling_rps,
                "ratio": ratio,
                "ratio_target_met": ratio_met,
                "rows_written_polls": pr.rows,
                "rows_written_bc": bc_rows,
                "pool_size": pr.pool_size,
                "pg_xacts_per_poll": pr.xacts_per_poll,
                "prompts": open_loop_json(prompts) if prompts else None,
                "ping": open_loop_json(ping) if ping else None,
                "peer": peer_json(peer) if peer else None,
            },
            indent=2,
        )
    )


def write_phase_json(name: str, result: PhaseResult) -> Path:
    """bench/out/<name>.json for a run of one phase (--only), which leaves bench/RESULTS.md alone."""
    if isinstance(result, PeerResult):
        figures = peer_json(result)
    elif isinstance(result, PromptResult | PingResult):
        figures = open_loop_json(result)
    else:
        raise TypeError(f"no JSON for a {type(result).__name__} alone")
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2))
    return path.relative_to(ROOT)


def summary_line(facts: RunFacts, results: dict[str, PhaseResult]) -> str:
    """The console's last word on a run of all the phases."""
    ceiling = result_of(results, "ceiling", Load)
    ceiling_after = result_of(results, "ceiling-after", Load)
    bc = result_of(results, "bc-authorize", BcResult).load
    pr = result_of(results, "pending-polls", PollResult)
    prompts = result_of(results, "prompts", PromptResult)
    ping = result_of(results, "ping", PingResult)
    peer = result_of(results, "peer", PeerResult) if "peer" in results else None
    _, ratio = ceiling_ratio(ceiling, ceiling_after, pr.load)
    return (
        f"done in {facts.elapsed:.0f} s: ceiling {ceiling.rps:,.0f} then {ceiling_after.rps:,.0f} req/s; "
        f"bc-authorize {bc.rps:,.0f} req/s; "
        f"pending polls {pr.load.rps:,.0f} req/s = {100 * ratio:.1f} % of ceiling "
        f"(target {100 * RATIO_TARGET:.0f} %: {'met' if ratio >= RATIO_TARGET else 'NOT met'}); "
        f"rows written by polls: {sum(pr.rows.values())}; prompts p50 "
        f"{prompts.stats.p50_ms:.0f} ms, p99 {prompts.stats.p99_ms:.0f} ms, lost "
        f"{prompts.stats.lost}, duplicates {prompts.stats.duplicates} (target "
        f"{'met' if prompts.target_met else 'NOT met'}); ping p50 {ping.stats.p50_ms:.0f} ms, "
        f"p99 {ping.stats.p99_ms:.0f} ms, lost {ping.stats.lost} (target "
        f"{'met' if ping.target_met else 'NOT met'}); "
        + (f"against the peer, {peer.summary()}. " if peer else "")
        + f"See {RESULTS_MD.relative_to(ROOT)}."
    )
