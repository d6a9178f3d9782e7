"""Whole approvals (issue 17, item 4): what one approval costs from the agent's request to its tokens, split by the
process that pays for it.

Each flow is what an agent, the SMS provider and the approver's phone really do:
1. the agent (a poll-mode client, client_secret_basic) POSTs /oauth/bc-authorize/, on a fixed schedule (open loop);
2. a real Celery worker sends the prompt through the twilio client to the fake Twilio in this process; the SMS quotes
   the binding message and carries the request's link;
3. the approver's phone, signed in once through the login form, opens that link (GET /approvals/l/<token>/, a 302 to
   the request's page: the link is all the SMS gives, and the redirect names the request) and POSTs
   /approvals/<id>/decide/ (approve) with its session and CSRF cookies, as the ping phase does;
4. the agent polls POST /oauth/token/ the interval after bc-authorize's answer (the interval that answer gave, CIBA
   Core §7.3) and again the interval after each pending answer, until the tokens come.

The interval makes a flow last at least 5 s, so a closed loop of a few flows would measure waiting: flows start at a
fixed rate with many in flight. CPU per flow = the CPU each process used while the measured flows were started (a
window of steady state: the warm-up is longer than the interval, so the window holds as many polls of earlier flows
as its own flows make after it) / the flows started in it.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from bench.common import CIBA_GRANT, OUT_DIR, POLL_INTERVAL_S, BenchError, form_headers, free_port, log, percentile
from bench.load import OpenLoop, Shot, send
from bench.phases.base import Context, Phase
from bench.phases.open_loop import ArrivalStats, arrival_stats, latencies_ms
from bench.phases.ping import Browser, decide_path, decided_location
from bench.phases.prompts import bc_shots, create_sms_approvers, sms_label, twilio_env
from bench.postgres import pg_sessions
from bench.servers import Server, Worker, flush_redis, server_env, start_server, start_worker, wait_until_drained
from bench.system import CpuSample, cpu_seconds, cpu_shares, wait_for_quiet
from tests.fakes.twilio import FakeTwilio, ReceivedSms

SLOW_DOWN_STEP = 5  # RFC 8628 §3.5, which CIBA Core §11 refers to: after slow_down the agent waits 5 s more
SERVER_GROUPS = ("gunicorn", "celery", "postgres", "redis")  # what a deployment pays for; "bench" is the clients
CPU_GROUPS = (*SERVER_GROUPS, "bench")
STAGES = ("bc-authorize answer", "prompt at the fake", "link answer", "decide answer", "token answer", "whole flow")
_LINK = re.compile(r"https?://\S+?(/approvals/l/[A-Za-z0-9_-]+/)")
_REQUEST_PAGE = re.compile(r"/approvals/([0-9a-f-]{36})/")


# ------------------------------------------------------------------------------------------------ one flow


@dataclass(kw_only=True)
class Poll(Shot):
    answer: str = ""  # "token", the error of a 400 answer, or what else came


@dataclass(kw_only=True)
class Flow(Shot):
    """One approval. The shot itself is the agent's bc-authorize POST (label W<n> in the warm-up, B<n> measured,
    S1 the smoke test), its binding message the label, which the SMS quotes."""

    auth_req_id: str = ""
    interval: int = POLL_INTERVAL_S  # the agent's, as bc-authorize's answer gave it (and slow_down grew it)
    sms_at: list[float] = field(default_factory=list)  # received_at of each SMS for it
    link: Shot | None = None  # the phone opening the SMS's link
    decide: Shot | None = None
    polls: list[Poll] = field(default_factory=list)
    failure: str = ""  # the first step that went wrong, and how

    def fail(self, why: str) -> None:
        if not self.failure:
            self.failure = why

    @property
    def token(self) -> Poll | None:
        """The poll that got the tokens."""
        return self.polls[-1] if self.polls and self.polls[-1].answer == "token" else None

    @property
    def done(self) -> bool:
        return self.token is not None or bool(self.failure)


def _what(shot: Shot, body: bytes) -> str:
    """An answer in a few words: the transport error, or the status and the OAuth error it names."""
    if shot.error:
        return shot.error
    try:
        error = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        error = ""
    return f"HTTP {shot.status} {error}".strip()


@dataclass
class Phone:
    """An approver's phone: its browser, signed in once; its timed requests send the cookies as they were after the
    sign-in (the ping phase's Browser)."""

    number: str
    browser: Browser
    link_headers: dict[str, str] = field(init=False)
    decide_headers: dict[str, str] = field(init=False)
    decide_body: str = field(init=False)

    def __post_init__(self) -> None:
        self.link_headers = self.browser.headers()
        self.decide_headers = self.browser.decide_headers()
        self.decide_body = urlencode(self.browser.decide_form())


class FlowRun:
    """The agent, the phones and the timeline of the flows against gunicorn on `port`.

    bc-authorize's answer (OpenLoop's on_answer) puts the flow's first poll on the timeline; each SMS at the fake
    sends its phone to open the link and decide; a poll answered pending puts the next one on the timeline. Steps run
    on one pool of threads, each request on a connection of its own."""

    def __init__(self, port: int, auth: str, phones: dict[str, Phone], fake: FakeTwilio) -> None:
        self.port = port
        self.agent_headers = form_headers(auth)
        self.phones = phones
        self.fake = fake
        self.flows: dict[str, Flow] = {}
        self.unmatched = 0  # SMS that named no flow
        self.give_up = math.inf  # time.time() after which no poll is made any more
        self._timeline: list[tuple[float, int, Flow, Callable[[float], None]]] = []
        self._order = itertools.count()  # ties on the heap
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="bench-flow")
        self._threads = [
            threading.Thread(target=self._run_timeline, name="bench-timeline", daemon=True),
            threading.Thread(target=self._watch_sms, name="bench-phones", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads:
            thread.join(timeout=5)

    def add(self, flows: list[Flow]) -> None:
        self.flows.update((flow.label, flow) for flow in flows)

    def start_one(self, flow: Flow) -> None:
        """A flow outside the schedule (the smoke test): its bc-authorize now, on this thread."""
        self.add([flow])
        self.answered(flow, send(self.port, flow, self.agent_headers))

    def wait(self, flows: list[Flow], until: float) -> None:
        while time.time() < until and not all(flow.done for flow in flows):
            time.sleep(0.1)

    # The agent.

    def answered(self, flow: Flow, body: bytes) -> None:
        """bc-authorize answered: the first poll is due an interval later (the answer's interval)."""
        if flow.status != 200:
            flow.fail(f"bc-authorize: {_what(flow, body)}")
            return
        try:
            acknowledgement = json.loads(body)
            flow.auth_req_id = acknowledgement["auth_req_id"]
            flow.interval = int(acknowledgement.get("interval") or POLL_INTERVAL_S)
        except (ValueError, KeyError, TypeError):
            flow.fail(f"bc-authorize: an answer without auth_req_id: {body[:100]!r}")
            return
        self._at(flow.answered + flow.interval, flow, lambda due: self._poll(flow, due))

    def _poll(self, flow: Flow, due: float) -> None:
        poll = Poll(
            label=flow.label,
            path="/oauth/token/",
            body=urlencode({"grant_type": CIBA_GRANT, "auth_req_id": flow.auth_req_id}),
            scheduled=due,
        )
        body = send(self.port, poll, self.agent_headers)
        poll.answer = "token" if poll.status == 200 and b'"access_token"' in body else _what(poll, body)
        flow.polls.append(poll)
        if poll.answer == "token":
            return
        if poll.answer == "HTTP 400 slow_down":
            flow.interval += SLOW_DOWN_STEP
        elif poll.answer != "HTTP 400 authorization_pending":
            flow.fail(f"token: {poll.answer}")
            return
        # The interval counts from the answer: the server's gate started before it was written.
        self._at(poll.answered + flow.interval, flow, lambda due: self._poll(flow, due))

    # The phones.

    def _watch_sms(self) -> None:
        seen = 0
        while not self._stop.is_set():
            try:
                messages = self.fake.wait_for_messages(seen + 1, timeout=2)
            except AssertionError:  # none came meanwhile
                continue
            for sms in messages[seen:]:
                self._sms(sms)
            seen = len(messages)

    def _sms(self, sms: ReceivedSms) -> None:
        flow = self.flows.get(sms_label(sms) or "")
        if flow is None:
            self.unmatched += 1
            return
        flow.sms_at.append(sms.received_at)
        if len(flow.sms_at) > 1:
            return  # a duplicate: the phone decided on the first
        link = _LINK.search(sms.body or "")
        phone = self.phones.get(sms.to or "")
        if link is None or phone is None:
            flow.fail(f"SMS: {'no link' if link is None else 'to an unknown number'}: {(sms.body or '')[:80]!r}")
            return
        path = link.group(1)
        with contextlib.suppress(RuntimeError):  # the run is closing: the pool takes no more
            self._pool.submit(self._guarded, flow, lambda: self._decide(flow, phone, path))

    def _decide(self, flow: Flow, phone: Phone, link_path: str) -> None:
        """The phone opens the link in its signed-in session (a 302 to the request's page) and approves."""
        opened = Shot(label=flow.label, path=link_path, body="")
        send(self.port, opened, phone.link_headers, method="GET")
        flow.link = opened
        page = _REQUEST_PAGE.fullmatch(urlsplit(opened.location).path)
        if opened.status != 302 or page is None:
            flow.fail(f"link: {opened.error or f'HTTP {opened.status}'} {opened.location[:60]}".strip())
            return
        decided = Shot(label=flow.label, path=decide_path(page.group(1)), body=phone.decide_body)
        send(self.port, decided, phone.decide_headers)
        flow.decide = decided
        if decided.status != 302 or not decided.location.endswith(decided_location(page.group(1))):
            flow.fail(f"decide: {decided.error or f'HTTP {decided.status}'} {decided.location[:60]}".strip())

    # The timeline.

    def _at(self, due: float, flow: Flow, step: Callable[[float], None]) -> None:
        if due > self.give_up:
            return  # counted as lost: no token by then
        with self._cond:
            heapq.heappush(self._timeline, (due, next(self._order), flow, step))
            self._cond.notify()

    def _run_timeline(self) -> None:
        with self._cond:
            while not self._stop.is_set():
                now = time.time()
                if self._timeline and self._timeline[0][0] <= now:
                    due, _, flow, step = heapq.heappop(self._timeline)
                    self._pool.submit(self._guarded, flow, functools.partial(step, due))
                else:
                    self._cond.wait(min(self._timeline[0][0] - now, 1.0) if self._timeline else 1.0)

    @staticmethod
    def _guarded(flow: Flow, step: Callable[[], None]) -> None:
        """A step's own error fails its flow, visibly, rather than vanishing in the pool."""
        try:
            step()
        except Exception as exc:
            flow.fail(f"bench: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------------------------------- statistics


@dataclass
class Stage:
    """A stage's latency over the measured flows that reached it (ms)."""

    p50_ms: float
    p99_ms: float
    count: int


def stage(values: list[float]) -> Stage:
    ordered = sorted(values)
    return Stage(percentile(ordered, 50), percentile(ordered, 99), len(ordered))


def _ms(shot: Shot | None) -> list[float]:
    return [1000 * (shot.answered - shot.sent)] if shot is not None and not shot.error else []


@dataclass
class FlowResult:
    prompts: ArrivalStats  # the measured bc-authorize requests and their SMS, counted as the prompt phase does
    stages: dict[str, Stage]
    flows: int  # started in the measured window
    completed: int  # of them, with their tokens
    failures: dict[str, int]  # the others, by what went wrong first
    completed_per_s: float  # flows (of any part of the run) whose tokens came within the window, per second
    window_s: float
    cpu_ms: dict[str, float]  # CPU milliseconds per flow by process group (and busy, steal, other)
    cpu: dict[str, float]  # the window's CPU shares of the whole machine (%), as the other phases report them
    poll_answers: dict[str, int]  # answers to the measured flows' polls
    polls_per_flow: float  # per completed flow
    late_polls: int  # polls sent more than 20 ms after they were due (the agent fell behind)
    pg_sessions: int  # PostgreSQL sessions opened in the bench database during the window
    interval: int  # the poll interval bc-authorize gave (the smoke test's)
    warmup_s: float
    approvers: int
    pending_cap: int
    worker: str
    nproc: int
    seconds: float  # the phase's wall time, set-up included

    @property
    def server_ms(self) -> float:
        """CPU per flow of what a deployment runs: gunicorn, the worker, PostgreSQL and Redis."""
        return sum(self.cpu_ms[g] for g in SERVER_GROUPS)

    @property
    def implied_rate(self) -> float:
        """Flows per second these costs allow on this machine's cores, were nothing else running."""
        return self.nproc * 1000 / self.server_ms if self.server_ms else math.nan

    @property
    def steady(self) -> bool:
        """Whether the warm-up was long enough for the window to hold the polls of earlier flows."""
        return self.warmup_s >= self.interval + 1

    def summary(self) -> str:
        s = self.stages
        cpu = " / ".join(f"{self.cpu_ms[g]:.1f}" for g in CPU_GROUPS)
        return (
            f"{self.completed} of {self.flows} flows completed ({self.completed_per_s:.1f}/s completed, started at "
            f"{self.prompts.achieved_rate:.1f}/s), failed or lost {self.flows - self.completed}; p50 bc-authorize "
            f"{s['bc-authorize answer'].p50_ms:.1f} ms, prompt {s['prompt at the fake'].p50_ms:.1f} ms, decide "
            f"{s['decide answer'].p50_ms:.1f} ms, token {s['token answer'].p50_ms:.1f} ms; CPU ms per flow "
            f"gunicorn / celery / pg / redis / bench {cpu}: {self.server_ms:.1f} ms server-side, "
            f"{self.implied_rate:.0f} flows/s on {self.nproc} cores"
        )


def compute_result(
    load: OpenLoop[Flow],
    run: FlowRun,
    before: CpuSample,
    after: CpuSample,
    *,
    sessions: int,
    interval: int,
    warmup_s: float,
    approvers: int,
    pending_cap: int,
    worker: str,
) -> FlowResult:
    """The figures of the measured flows; CPU from the readings at the window's ends."""
    measured = load.measured
    arrivals = {flow.label: flow.sms_at for flow in run.flows.values() if flow.sms_at}
    prompts = arrival_stats(load, arrivals, run.unmatched, ok=lambda f: f.status == 200, since=lambda f: f.answered)
    answered = [f for f in measured if f.status == 200]
    done = [f for f in measured if f.token is not None]
    stages = {
        "bc-authorize answer": stage([ms for f in answered for ms in _ms(f)]),
        "prompt at the fake": stage(latencies_ms(answered, arrivals, lambda f: f.answered)),
        "link answer": stage([ms for f in measured if f.link and f.link.status == 302 for ms in _ms(f.link)]),
        "decide answer": stage([ms for f in measured if f.decide and f.decide.status == 302 for ms in _ms(f.decide)]),
        "token answer": stage([ms for f in done for ms in _ms(f.token)]),
        "whole flow": stage([1000 * (f.token.answered - f.sent) for f in done if f.token]),
    }
    failures: dict[str, int] = {}
    for f in measured:
        if f.token is None:
            why = f.failure or ("no SMS" if not f.sms_at else "no token within the wait")
            failures[why] = failures.get(why, 0) + 1
    window = load.measured_end - load.measured_start
    in_window = sum(
        1
        for f in run.flows.values()
        if f.token is not None and load.measured_start <= f.token.answered < load.measured_end
    )
    polls = [p for f in measured for p in f.polls]
    answers: dict[str, int] = {}
    for p in polls:
        answers[p.answer] = answers.get(p.answer, 0) + 1
    return FlowResult(
        prompts=prompts,
        stages=stages,
        flows=len(measured),
        completed=len(done),
        failures=failures,
        completed_per_s=in_window / window if window else math.nan,
        window_s=window,
        cpu_ms={k: 1000 * v / max(len(measured), 1) for k, v in cpu_seconds(before, after).items()},
        cpu=cpu_shares(before, after, 0.0),
        poll_answers=answers,
        polls_per_flow=sum(len(f.polls) for f in done) / max(len(done), 1),
        late_polls=sum(1 for p in polls if p.sent - p.scheduled > 0.020),
        pg_sessions=sessions,
        interval=interval,
        warmup_s=warmup_s,
        approvers=approvers,
        pending_cap=pending_cap,
        worker=worker,
        nproc=len(os.sched_getaffinity(0)),
        seconds=0.0,
    )


def write_raw(flows: list[Flow]) -> None:
    def at(shot: Shot | None) -> str:
        return f"{shot.sent:.6f}\t{shot.answered:.6f}\t{shot.status}" if shot else "\t\t"

    (OUT_DIR / "flows.tsv").write_text(
        "label\tauth_req_id\tbc_sent\tbc_answered\tbc_status\tfirst_sms\tsms\tlink_sent\tlink_answered\tlink_status\t"
        "decide_sent\tdecide_answered\tdecide_status\tpolls\tpoll_answers\ttoken_sent\ttoken_answered\ttoken_status\t"
        "failure\n"
        + "".join(
            f"{f.label}\t{f.auth_req_id}\t{at(f)}\t{min(f.sms_at, default=0):.6f}\t{len(f.sms_at)}\t{at(f.link)}\t"
            f"{at(f.decide)}\t{len(f.polls)}\t{','.join(p.answer for p in f.polls)}\t{at(f.token)}\t{f.failure}\n"
            for f in flows
        )
    )


# ---------------------------------------------------------------------------------------------------------- phase


class Flows(Phase):
    """Whole approvals at a steady rate, open loop: bc-authorize, the SMS through a real worker, the phone's link and
    decide, the agent's polls until its tokens; latency per stage and CPU per flow per process."""

    name = "flows"

    def run(self, ctx: Context) -> FlowResult:
        args = ctx.args
        started = time.monotonic()
        fake = FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16))
        server: Server | None = None
        worker: Worker | None = None
        run: FlowRun | None = None
        try:
            port = free_port()
            env = server_env(args, port)
            env.update(twilio_env(fake))
            # The pending cap in force (the product's default unless --flows-pending-cap says otherwise): each
            # person's requests are decided within moments, so it never binds here, and every bc-authorize pays for
            # it. The rate counters stay counted but out of reach (server_env), as in every phase.
            env["APPROVALS_MAX_PENDING_PER_PERSON"] = str(args.flows_pending_cap)
            log(f"flows: creating {args.flows_approvers} approvers with a phone")
            approvers = create_sms_approvers(env, args.flows_approvers, prefix="bench-flow", first_phone=200)
            flush_redis(args)  # tasks queued by earlier phases with no worker must not reach this one
            log(
                f"flows: fake Twilio on {fake.base_url}; gunicorn ({args.workers} gthread workers), Celery worker "
                f"({args.prompt_pool}, concurrency {args.prompt_concurrency})"
            )
            server = start_server(args, env, port, "gunicorn-flows.log")
            worker = start_worker(args, env, "celery-flows.log")
            phones = {}
            for username, password, number in approvers:
                browser = Browser(port)
                browser.login(username, password)
                phones[number] = Phone(number, browser)
            run = FlowRun(port, ctx.auth, phones, fake)

            # Smoke test, which also waits for the worker: one whole flow, its tokens within 30 s and an interval.
            hints = [name for name, _, _ in approvers]
            smoke = Flow(
                label="S1",
                path="/oauth/bc-authorize/",
                body=urlencode({"scope": "openid", "login_hint": hints[0], "binding_message": "S1"}),
            )
            run.start_one(smoke)
            run.wait([smoke], time.time() + 30 + smoke.interval)
            if smoke.token is None:
                raise BenchError(
                    f"flows: the smoke test's flow did not complete ({smoke.failure or 'still waiting'}; SMS "
                    f"{len(smoke.sms_at)}, link {smoke.link and smoke.link.status}, decide "
                    f"{smoke.decide and smoke.decide.status}, polls {[p.answer for p in smoke.polls]}).\n"
                    f"Celery worker log:\n{worker.log_tail()}"
                )
            interval = smoke.interval
            if args.flows_warmup < interval + 1:
                log(
                    f"flows: WARNING: a warm-up of {args.flows_warmup} s is shorter than the poll interval ({interval} "
                    "s) + 1 s: the window misses polls, the CPU per flow comes out too low"
                )
            wait_until_drained(port)
            time.sleep(1)  # let the worker go idle
            wait_for_quiet(args.wait_quiet, 3.0, prefix="flows: ", shown=2)

            shots, n_warm = bc_shots(hints, args.flows_rate, args.flows_warmup, args.flows_duration)
            flows = [Flow(label=s.label, path=s.path, body=s.body) for s in shots]
            run.add(flows)
            load = OpenLoop(
                port=port,
                shots=flows,
                headers=run.agent_headers,
                rate=args.flows_rate,
                warmup=n_warm,
                threads=32,
                name="bench-agent",
                on_answer=run.answered,
            )
            log(
                f"flows: {args.flows_warmup} s warm-up then {args.flows_duration} s measured at {args.flows_rate:g} "
                f"flows/s (open loop; polls every {interval} s)"
            )
            generator = load.start()  # returns when the first measured flow is due
            sessions_0 = pg_sessions(args)
            before = ctx.cpu_sample(server, worker)
            time.sleep(max(0.0, load.measured_end - time.time()))
            after = ctx.cpu_sample(server, worker)
            sessions = pg_sessions(args) - sessions_0
            generator.join(timeout=60)
            if generator.is_alive():
                raise BenchError("flows: the load generator did not finish")
            # Flows started last need an interval (or two, if their decision came late) before their tokens.
            run.give_up = load.measured_end + args.flows_wait
            run.wait(load.measured, run.give_up + 2)
            if not server.alive() or not worker.alive():
                raise BenchError(f"flows: gunicorn or the worker died.\n{server.log_tail()}\n{worker.log_tail()}")
            time.sleep(0.5)  # a duplicate SMS would come right after
            run.close()
            result = compute_result(
                load,
                run,
                before,
                after,
                sessions=sessions,
                interval=interval,
                warmup_s=float(args.flows_warmup),
                approvers=len(phones),
                pending_cap=args.flows_pending_cap,
                worker=worker.description,
            )
            write_raw([smoke, *flows])
        finally:
            if run is not None:
                run.close()
            if worker is not None:
                worker.stop()
            if server is not None:
                server.stop()
            fake.close()
        result.seconds = time.monotonic() - started
        return result
