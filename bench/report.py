"""The report: the one writer of bench/RESULTS.md and of the JSON copies in bench/out/ (results.json, or
prompts.json / ping.json for `--only`), and the console summary of a run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, HOST, OUT_DIR, ROOT
from bench.flat_seed import HISTORY_MIX
from bench.load import Load
from bench.phases.admin_pages import AdminResult, admin_section, admin_verdict
from bench.phases.base import PhaseResult, result_of
from bench.phases.closed_loop import (
    GAP_MARGIN_SECONDS,
    POLL_RATE_CEILING_SHARE,
    RATIO_TARGET,
    BcResult,
    PollResult,
    ceiling_ratio,
)
from bench.phases.flatness import CONDITIONS as FLAT_CONDITIONS
from bench.phases.flatness import FLAT_TARGET, FlatResult
from bench.phases.flatness import SEED_EXPIRY_S as FLAT_SEED_EXPIRY_S
from bench.phases.flatness import SEED_SPREAD_S as FLAT_SEED_SPREAD_S
from bench.phases.flatness import TABLES as FLAT_TABLES
from bench.phases.flows import FlowResult
from bench.phases.open_loop import ArrivalStats
from bench.phases.peer import BC_TARGET, P99_LIMIT, POLL_TARGET, PeerResult
from bench.phases.ping import PING_P50_TARGET_MS, PingResult
from bench.phases.profile import ProfileResult, profile_section
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
    analyzed_between: bool = False  # autovacuum was off: the run ANALYZEd the bench database before each phase


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
        "rate counters are counted but out of reach in every phase, the pending cap is off but in the whole "
        "approvals, or they would refuse nearly all of the benchmark's requests).",
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


# ---------------------------------------------------------------------------------------------- whole approvals

FLOW_STAGES = {
    "bc-authorize answer": "bc-authorize: sent → answer read",
    "prompt at the fake": "prompt: bc-authorize's answer read → SMS at the fake Twilio",
    "link answer": "the phone opens the SMS's link: sent → its 302 read",
    "decide answer": "decide POST: sent → its 302 read",
    "token answer": "the poll that got the tokens: sent → answer read",
    "whole flow": "whole flow: bc-authorize sent → tokens read",
}
RATES_OUT_OF_REACH = ", ".join(f"{k}={v}" for k, v in ABUSE_LIMITS_OFF.items() if "PENDING" not in k)
FLOW_CPU = {"gunicorn": "gunicorn", "celery": "Celery worker", "postgres": "PostgreSQL", "redis": "Redis"}


def flows_section(r: FlowResult, args: argparse.Namespace) -> list[str]:
    st = r.prompts
    failures = ", ".join(f"{why}: {n}" for why, n in r.failures.items()) or "none"
    answers = ", ".join(f"{a}: {n:,}" for a, n in r.poll_answers.items())
    bench_total = r.server_ms + r.cpu_ms["bench"]
    return [
        "## Whole approvals (issue 17, item 4)",
        "",
        f"**{r.completed_per_s:.1f} flows/s** completed while {args.flows_rate:g} a second were started (achieved "
        f"{st.achieved_rate:.2f}/s); {r.completed:,} of the {r.flows:,} flows started in the measured "
        f"{r.window_s:.0f} s got their tokens (failed or lost: {failures}). A whole approval cost the server side "
        f"(gunicorn, the Celery worker, PostgreSQL and Redis) **{r.server_ms:.1f} CPU-ms**, so this machine's "
        f"{r.nproc} cores would carry about **{r.implied_rate:.0f} flows/s** with nothing else running "
        f"({1000 * r.nproc / bench_total:.0f} flows/s with the benchmark's own share, which plays the agents, the "
        "phones and Twilio). Issue 17 sets no figure here: it asks that a whole approval cost little.",
        "",
        "| stage | p50 ms | p99 ms | flows |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {FLOW_STAGES[name]} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.count:,} |" for name, s in r.stages.items()],
        "",
        "| CPU-ms per flow | " + " | ".join(FLOW_CPU.values()) + " | server side | benchmark | other | steal |",
        "| --- |" + " ---: |" * (len(FLOW_CPU) + 4),
        "| measured | "
        + " | ".join(f"{r.cpu_ms[g]:.2f}" for g in FLOW_CPU)
        + f" | **{r.server_ms:.2f}** | {r.cpu_ms['bench']:.2f} | {r.cpu_ms['other']:.2f} | {r.cpu_ms['steal']:.2f} |",
        f"| flows/s on {r.nproc} cores if only this cost counted | "
        + " | ".join(f"{1000 * r.nproc / r.cpu_ms[g]:,.0f}" if r.cpu_ms[g] else "-" for g in FLOW_CPU)
        + f" | **{r.implied_rate:,.0f}** | | | |",
        "",
        *disturbance(r.cpu, "flows"),
        *(
            []
            if r.steady
            else [
                f"- Caution: the warm-up ({r.warmup_s:.0f} s) was shorter than the poll interval ({r.interval} s) + 1 "
                "s, so the window missed the polls of flows started before it: the CPU per flow is too low."
            ]
        ),
        f"- Each flow is what really happens: (1) the agent, a poll-mode client (client_secret_basic), POSTs "
        f"/oauth/bc-authorize/ on a fixed schedule, {args.flows_rate:g} a second (open loop, from a pool of 32 "
        f"threads, each request on its own connection), login_hint rotating over {r.approvers} approvers and a "
        "unique binding_message per flow; (2) a real Celery worker sends the prompt through the twilio client to "
        "the fake Twilio in the benchmark's process (as in the prompt phase); the SMS quotes the binding message and "
        "carries the request's link; (3) as the SMS arrives, the approver's phone, signed in once through "
        "/accounts/login/, opens that link (GET /approvals/l/<token>/, a 302 to the request's page: the link is all "
        "the SMS gives, and the redirect names the request) and POSTs /approvals/<id>/decide/ (approve) with its "
        "session and CSRF cookies, as in the ping phase; (4) the agent polls POST /oauth/token/ the interval "
        f"after bc-authorize's answer (the interval the answer gave, {r.interval} s) and again the interval after "
        "each pending answer, until the tokens come.",
        f"- Why open: the interval makes a flow last at least {r.interval} s, so a closed loop of a few flows would "
        f"measure waiting. {args.flows_warmup} s of flows first (not counted), then {args.flows_duration} s "
        "measured: only flows started in them count, and the CPU is what each process used in those seconds, "
        "divided by the flows started in them. The warm-up is longer than the interval, so the window is steady "
        "state: it holds as many polls of earlier flows as its own flows make after it.",
        f"- Polls of the measured flows: {answers} ({r.polls_per_flow:.2f} per completed flow; "
        f"{r.late_polls} sent more than 20 ms after they were due). An early poll would get `slow_down`; the agent "
        "waits the interval from each answer, so none should.",
        f"- Flows: {st.errors} bc-authorize answers other than 200{error_kinds(st)}; {st.lost} answered but no SMS "
        f"within {args.flows_wait:g} s after the last flow started; {st.duplicates} with more than one SMS; "
        f"{st.unmatched} SMS named no flow. A flow still without its tokens {args.flows_wait:g} s after the last "
        "one started counts as lost; one with an unexpected answer at any step, as failed at that step.",
        "- Left out: the request's page, which a browser would render after the link's redirect and again after "
        "the decision (two page renders per approval more), and the phones' sign-in (once per phone, before the "
        "run).",
        "- Abuse limits: the rate counters are counted but out of reach, as in every phase "
        f"({RATES_OUT_OF_REACH}): at {args.flows_rate:g} flows/s the product's 5 a minute per client "
        f"and person would need {int(args.flows_rate * 60 / 5):,} approvers. The pending cap is in force: "
        f"APPROVALS_MAX_PENDING_PER_PERSON={r.pending_cap}"
        + (" (the product's default)" if r.pending_cap == 50 else "")
        + ", so every bc-authorize pays for its lock and count; a person's requests are decided within moments, "
        "so it binds only if decisions fall far behind (it would show as access_denied above).",
        "- CPU: gunicorn = its master and workers, Celery worker = its process group, PostgreSQL = the whole "
        "server (backends that exited included, and so also other databases' clients, such as a test suite "
        "running meanwhile), Redis = the benchmark's redis-server, benchmark = its own process (the agents, the "
        f"phones and the fake Twilio). Shares of the whole machine during the window: "
        f"{fmt_cpu(r.cpu, OPEN_LOOP_CPU)} % ({' / '.join(OPEN_LOOP_CPU)}). PostgreSQL sessions opened: "
        f"{r.pg_sessions}.",
        f"- Worker: `{r.worker}` (as in the prompt phase), broker emptied first; gunicorn: a fresh one, "
        f"{args.workers} gthread workers of 4 threads. Phase wall time {r.seconds:.0f} s. Raw data: "
        "bench/out/flows.tsv, celery-flows.log, gunicorn-flows.log.",
        "",
    ]


def flows_json(r: FlowResult) -> dict[str, Any]:
    return {**asdict(r), "server_ms": r.server_ms, "implied_rate": r.implied_rate, "steady": r.steady}


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


# ------------------------------------------------------------------------------------- flat cost (issue 17, item 3)


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


def flat_verdicts(r: FlatResult) -> list[str]:
    pairs = len(r.ratios["polls"])
    return [
        f"- Flat cost, token polls: with {r.pending['big']:,} pending requests **{r.median('polls'):.2f}×** the polls "
        f"a second with {r.pending['base']:,} (median of {pairs} alternating pairs; {r.polled:,} requests polled in "
        f"each store, answered alike) — target at least {FLAT_TARGET:.2f}× (within 10 %) — "
        f"{_verdict(r.met('polls'))}.",
        f"- Flat cost, bc-authorize: after an hour of traffic ({r.history['rows']:,} requests, "
        f"{r.history['events']:,} audit events) **{r.median('bc'):.2f}×** the requests a second of a fresh "
        f"database (median of {len(r.ratios['bc'])} alternating pairs) — target at least {FLAT_TARGET:.2f}× (within "
        f"10 %) — {_verdict(r.met('bc'))}.",
    ]


def flat_section(r: FlatResult, args: argparse.Namespace) -> list[str]:
    label = {"polls": "token polls", "bc": "bc-authorize"}
    store = {"base": f"{r.pending['base']:,} pending", "big": f"{r.pending['big']:,} pending", "fresh": "fresh"}
    store["grown"] = f"grown ({r.history['rows']:,})"
    rows = [
        f"| {label[run.part]} | {run.pair} | {store[run.condition]} | {run.rps:,.0f} | {run.p50_ms:.2f} | "
        f"{run.p99_ms:.2f} | {run.requests:,} | {run.answers.get('pending', 0):,} / "
        f"{run.answers.get('slow_down', 0):,} / {run.answers.get('ok', 0):,} / {run.answers.get('other', 0):,} | "
        f"{run.socket_errors} | {fmt_cpu(run.cpu, CLOSED_LOOP_CPU)} |"
        for run in r.runs
    ]
    ratio_rows = [
        f"| {label[part]}: {store[second]} / {store[first]} | {' / '.join(f'{x:.2f}' for x in r.ratios[part])} | "
        f"**{r.median(part):.2f}×** | {' / '.join(f'{x:.2f}' for x in r.p99_ratios[part])} |"
        for part, (first, second) in FLAT_CONDITIONS.items()
    ]
    seeded, before, polled = (r.redis["big"][k] for k in ("seeded", "before", "polled"))
    added_keys = (seeded.keys - before.keys) / max(r.pending["big"], 1)
    polled_keys = (polled.keys - seeded.keys) / max(r.polled, 1)

    def sizes(condition: str) -> str:
        return "; ".join(
            f"{table} {count:,} rows, {_mb(table_bytes)} + {_mb(index_bytes)} of indexes"
            for table, (count, table_bytes, index_bytes) in r.pg_sizes[condition].items()
        )

    def per_request(first: str, second: str, table: str) -> str:
        # Per request (its row, its one CREATED event): the growth over the growth in requests.
        (_, t0, i0), (_, t1, i1) = r.pg_sizes[first][table], r.pg_sizes[second][table]
        n = max(r.pg_sizes[second][FLAT_TABLES[0]][0] - r.pg_sizes[first][FLAT_TABLES[0]][0], 1)
        return f"{(t1 - t0) / n:,.0f} + {(i1 - i0) / n:,.0f} bytes ({table})"

    kinds = {"consumed": "tokens issued", "expired": "never decided, expired"}
    mix = ", ".join(f"{share} % {kinds.get(status, status)}" for status, share in HISTORY_MIX.items())
    h = r.history
    cautions = [
        f"- Caution: the machine was {busy:.0f} % busy just before the {label[part]} runs."
        for part, busy in r.quiet.items()
        if busy > QUIET_BUSY_PERCENT
    ] + [
        f"- Caution: during {label[run.part]} pair {run.pair} ({store[run.condition]}) "
        f"{run.cpu['other'] + run.cpu['steal']:.0f} % of the machine went to processes outside the benchmark or to "
        "other guests."
        for run in r.runs
        if run.cpu["other"] + run.cpu["steal"] > 5
    ]
    return [
        "## Flat cost (issue 17, item 3)",
        "",
        *flat_verdicts(r),
        f"- Redis memory per pending request, with {r.pending['big']:,} pending: **{r.redis_bytes_per_pending():,.0f} "
        f"bytes** (INFO used_memory of the redis-server, before and after seeding), "
        f"{r.mirror_key_bytes:,.0f} bytes of it the request's poll mirror entry (MEMORY USAGE, every element, mean "
        "of 1,000 seeded entries).",
        "",
        "Two stores, each a PostgreSQL database (copies of one migrated template with the same approver and poll "
        "client) and a Redis database, behind one gunicorn "
        f"({args.workers} gthread workers of 4 threads) and one redis-server of the phase's own. Between runs, "
        "with the server idle, the stores are swapped under it: its database connections are ended, the databases "
        "renamed (it reconnects on its next request, in the warm-up) and SWAPDB swaps the Redis databases. In a "
        "trial with two gunicorns and two redis-servers side by side, equal stores differed by up to 13 % for as "
        "long as the processes ran, more than the 10 % to be judged; with one server only the data differ. The "
        "runs alternate between the stores, each pair in the reverse order of the one before, and the verdicts "
        "take the median of the per-pair ratios, since the machine drifts 10-20 % over minutes. "
        f"wrk as in phases b and c: {args.concurrency} connections, {args.threads} threads, {r.warmup} s of warm-up "
        f"then {r.duration} s measured per run. Latency in ms; answers are authorization_pending / slow_down / 200 / "
        "any other.",
        "",
        "| measured | pair | store | req/s | p50 | p99 | requests | answers | socket errors "
        "| CPU %: gunicorn / pg / redis / wrk / other / steal / busy |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        *rows,
        "",
        "| ratio | req/s ratios per pair | median | p99 ratios per pair |",
        "| --- | --- | ---: | --- |",
        *ratio_rows,
        "",
        f"- Pending requests: bench/flat_seed.py, run with each store's server environment, wrote them as "
        "bc-authorize does for a poll client: the request rows as approval_request_create builds them, their CREATED "
        "audit events (bulk_create in batches of 2,000) and their poll mirror entries (authz.ciba.poll's "
        "pending_entry, status_key and request_ref, pipelined); a poll client gets no RequestCallback. They ask for "
        f"{FLAT_SEED_EXPIRY_S:,} s (a client may ask for up to an hour; with the default 300 s so many could not be "
        f"pending at once at our rate) and were created over the last {FLAT_SEED_SPREAD_S:,} s, so all outlive the "
        "phase; unprompted, as bc-authorize leaves them (no Celery worker runs here). Seeding "
        f"{r.pending['big']:,} took {r.seed_seconds.get('total', 0):.0f} s (PostgreSQL "
        f"{r.seed_seconds.get('db', 0):.0f} s, Redis {r.seed_seconds.get('redis', 0):.1f} s).",
        "- Seeded against real, in each store, a request made over HTTP with the same parameters and a seeded one: "
        + "; ".join(r.checks)
        + ".",
        f"- Polls: wrk polled {r.polled:,} requests in each store, the others idle, in phase c's pattern "
        "(bench/wrk.lua poll mode: a request is polled again once its interval and 0.3 s have passed, and early "
        "when none is due). At full speed so few requests are polled early nearly every time, so nearly every "
        "answer is slow_down, in both stores alike. A slow_down answer reads the request's mirror entry as a "
        "pending one does (one Lua script: the client's entry, the request's entry, then the pacing keys), so both "
        "measure that lookup in a store of that size; neither touches PostgreSQL.",
        f"- Redis, the big store: used_memory {_mb(before.used_memory)} before seeding, {_mb(seeded.used_memory)} "
        f"after ({added_keys:.2f} keys added a request); after the polls {polled_keys:.2f} more keys per polled "
        "request (its pacing gate and interval, which expire).",
        f"- PostgreSQL after seeding: {sizes('big')}. With {r.pending['base']:,}: {sizes('base')}. Per pending "
        f"request: {per_request('base', 'big', FLAT_TABLES[0])} and {per_request('base', 'big', FLAT_TABLES[1])}, "
        "table + indexes.",
        f"- The grown database: {h['rows']:,} requests created evenly over the hour before the run, with their audit "
        "trails, inserted by bench/flat_seed.py with INSERT ... SELECT generate_series into the real tables with "
        f"every index in place (as traffic grows them), then VACUUM ANALYZE and a CHECKPOINT "
        f"({h['insert_seconds']:.0f} s + {h['vacuum_seconds']:.0f} s + {h['checkpoint_seconds']:.0f} s). Shares: "
        f"{mix}; those whose decision or expiry lay still ahead are pending. Statuses: "
        + ", ".join(f"{k} {v:,}" for k, v in h["statuses"].items())
        + f"; {h['events']:,} audit events (created, prompted, and the decision, expiry, cancellation or "
        f"consumption). Sizes: {sizes('grown')}; fresh: {sizes('fresh')}. The history belongs to the measured "
        "client and approver; the tables bc-authorize never touches (tokens, deliveries) stay empty; its rows were "
        "written in their final state, so the tables lack the dead tuples the service's UPDATEs leave between two "
        "vacuums.",
        "- bc-authorize as in phase b (scope, login_hint, binding_message; client_secret_basic). After the runs the "
        f"fresh database held {r.rows_after.get('fresh', 0):,} requests (its own runs' only), the grown one "
        f"{r.rows_after.get('grown', 0):,}.",
        *cautions,
        f"- Phase wall time {r.seconds:.0f} s. Raw output: bench/out/wrk-flat-*, gunicorn-flat.log, redis-flat.log.",
        "",
    ]


def flat_json(r: FlatResult) -> dict[str, Any]:
    return {
        **asdict(r),
        "medians": {part: r.median(part) for part in FLAT_CONDITIONS},
        "verdicts": r.verdicts(),
        "redis_bytes_per_pending": r.redis_bytes_per_pending(),
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
    flows = result_of(results, "flows", FlowResult) if "flows" in results else None
    peer = result_of(results, "peer", PeerResult) if "peer" in results else None
    profile = result_of(results, "profile", ProfileResult) if "profile" in results else None
    admin_pages = result_of(results, "admin", AdminResult) if "admin" in results else None
    flat = result_of(results, "flatness", FlatResult) if "flatness" in results else None
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
        *(admin_verdict(admin_pages) if admin_pages else []),
        *(flat_verdicts(flat) if flat else []),
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
        *(flat_section(flat, args) if flat else []),
        *(prompt_section(prompts, args) if prompts else []),
        *(ping_section(ping, args) if ping else []),
        *(flows_section(flows, args) if flows else []),
        *(
            profile_section(profile, {"b. bc-authorize": bc, "c. pending polls": polls}, facts.machine["nproc"])
            if profile
            else []
        ),
        *(admin_section(admin_pages) if admin_pages else []),
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
        + "."
        + (
            " Autovacuum is off on this PostgreSQL server (a CI configuration), so the run ANALYZEs the database "
            "before each phase after the first, as autovacuum would have once the earlier phases had written their "
            "rows: otherwise the planner keeps the statistics of empty tables (after phases a-c and the peer's runs, "
            "a prompt's claim read every unprompted request through a partial index instead of one row by its "
            "primary key)."
            if getattr(facts, "analyzed_between", False)
            else " Autovacuum is on."
        ),
        f"- Redis: {redis_url(args)} as the cache and the Celery broker (phases a-c: prompts queue up, no worker "
        "runs), flushed before and after; "
        + (
            "the benchmark's own redis-server (`--save '' --appendonly no`, a free port), started for the run and "
            "stopped after it, so the test suite's FLUSHDBs on the system Redis cannot reach it."
            if facts.own_redis
            else "an existing Redis given with --redis-port."
        )
        + f" {LIMITS_OFF} (the rate counters are counted but out of reach, the pending cap is off: the abuse limits"
        " would refuse the benchmark's requests; the whole approvals keep the cap in force).",
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
                "flows": flows_json(flows) if flows else None,
                "peer": peer_json(peer) if peer else None,
                "flatness": flat_json(flat) if flat else None,
                "profile": asdict(profile) if profile else None,
                "admin": asdict(admin_pages) if admin_pages else None,
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
    elif isinstance(result, FlowResult):
        figures = flows_json(result)
    elif isinstance(result, FlatResult):
        figures = flat_json(result)
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        figures = dataclasses.asdict(result)
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
    flat = result_of(results, "flatness", FlatResult) if "flatness" in results else None
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
        + (f"Flat cost: {flat.summary()}. " if flat else "")
        + f"See {RESULTS_MD.relative_to(ROOT)}."
    )
