"""jobrelay's long jobs as MCP tasks (`io.modelcontextprotocol/tasks`, issue 16).

`mcp_server.mcptasks` speaks the protocol and knows nothing of jobs; this module is the
jobrelay side of it, on `JobService`'s public methods and the ledger (`TaskLedger` rows):

- `LedgerTaskStore`: the `TaskStore`. A task row sits in the ledger beside its job (same
  file, same durability), written durably from the job's intent row, before the upstream POST.
  Task ids are an HMAC of the owner and the job handle under a secret kept in the ledger, so
  they are unguessable and the same in every process on that ledger.
- `JobTasks`: the starter (runs the submit in the background and opens the task the moment
  the intent row is written), the resolver (ledger row -> task state, local reads only), the
  canceller (stops following; the upstream job runs on), the follower (one per open task,
  built on `JobService.wait`, so every follower of a job shares its poll coalescer or SSE
  stream: no extra upstream calls per task or per listener), and the owner key (the request's
  key fingerprints, so another tenant's task reads as not found).
- `IntentTap`: wraps the ledger so the starter learns of the intent row from inside the
  service's own intent-before-POST path, without a hook in `JobService`.

Mapping (DESIGN.md section 5): a running job is `working` with a status message (percent,
phase, ETA) and a poll interval from the upstream cadence; a finished job, a job that failed
upstream and a submit whose outcome is unknown are all `completed`, with exactly the result the
tool would return (its advice included); `failed` is kept for jobrelay's own faults.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, CallToolResult

from mcp_server import _bounds as B
from mcp_server.errors import InputProblem, JobRelayError
from mcp_server.jobs import Caller, Outcome
from mcp_server.ledger import JobRecord, Ledger, TaskLedger, provider_for_job_id
from mcp_server.mcptasks import TaskCall, TaskEngine, TaskRecord, TaskUpdate
from mcp_server.models import ErrorCode, ErrorInfo, JobState
from mcp_server.schemas import JobOutput

if TYPE_CHECKING:
    from mcp_server.server import JobRelayServer, Runtime

log = logging.getLogger(__name__)

TASK_TOOLS = frozenset({"start_research", "start_seo_job", "wait_for_job"})
TASK_TTL_MS = 7 * 24 * 60 * 60 * 1000
"""A week: longer than either API is known to keep a job (neither documents it; 24 h at
least). The job itself stays in the ledger after its task expires (`list_jobs`)."""
SECRET_NAME = "mcp-tasks"  # noqa: S105  # the secret's name in the ledger, not a secret
SWEEP_SECONDS = 3600.0
"""Expired task rows are deleted when a task starts, at most this often."""
_FOLLOW_RETRY_SECONDS = 5.0

_NO_OWNER = "invalid-key-header"
"""The owner of a tools/call whose key header is unusable: matches no task and no caller."""

IntentHook = Callable[[JobRecord], Awaitable[None]]
_ON_INTENT: contextvars.ContextVar[IntentHook | None] = contextvars.ContextVar(
    "jobrelay_on_intent", default=None
)


# ---- owners ------------------------------------------------------------------------------------


def owner_key(caller: Caller) -> str:
    """A request's owner: its key fingerprint per provider (never a key), in registration
    order."""
    return " ".join(f"{p}={tenant}" for p, tenant in caller.tenants.items())


def _tenant(owner: str, provider: str) -> str | None:
    for part in owner.split():
        name, _, tenant = part.partition("=")
        if name == provider:
            return tenant
    return None


def job_of(handle: str) -> str:
    """The job handle behind a task handle (`sea_...`, or `sea_.../wait-...` for a wait)."""
    return handle.split("/", 1)[0]


def _provider(handle: str) -> str:
    provider = provider_for_job_id(job_of(handle))
    if provider is None:  # every task handle is made from a ledger handle
        raise ValueError(f"not a job handle: {handle!r}")
    return provider


# ---- the store ---------------------------------------------------------------------------------


def _dump(record: TaskRecord) -> dict[str, Any]:
    data = asdict(record)
    data["result"] = None if record.result is None else dict(record.result)
    data["error"] = None if record.error is None else dict(record.error)
    return data


def _load(data: Mapping[str, Any]) -> TaskRecord:
    return TaskRecord(**data)


@dataclass
class LedgerTaskStore:
    """`mcptasks.TaskStore` in the job ledger. A task is visible to a request whose key for
    the job's provider is the key that made the task (another tenant: None, as for a wrong id)."""

    ledger: TaskLedger

    async def create(self, record: TaskRecord) -> TaskRecord:
        expires = None if record.ttl_ms is None else record.created_at + record.ttl_ms / 1000
        stored = await self.ledger.create_task(
            record.task_id, job_id=job_of(record.handle), data=_dump(record), expires_at=expires
        )
        return _load(stored)

    async def get(self, task_id: str, owner: str | None) -> TaskRecord | None:
        data = await self.ledger.get_task(task_id)
        if data is None:
            return None
        record = _load(data)
        if owner is not None:
            provider = _provider(record.handle)
            theirs = _tenant(record.owner, provider)
            if theirs is None or theirs != _tenant(owner, provider):
                return None
        return record

    async def save(self, record: TaskRecord) -> TaskRecord | None:
        stored = await self.ledger.save_task(
            record.task_id, _dump(record), terminal=record.terminal
        )
        return None if stored is None else _load(stored)

    async def delete_expired(self, now: float) -> int:
        return await self.ledger.delete_expired_tasks(now)


# ---- the intent tap ----------------------------------------------------------------------------


class IntentTap:
    """The ledger, with `record_intent` telling the current task's starter about the new row
    (after it is durable, before the service sends the POST). Everything else passes through."""

    def __init__(self, inner: Ledger) -> None:
        self._inner = inner

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        stored = await self._inner.record_intent(record, budget=budget)
        hook = _ON_INTENT.get()
        if hook is not None:
            await hook(stored)
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def tap(ledger: Ledger) -> Ledger:
    return cast("Ledger", IntentTap(ledger))


# ---- status texts ------------------------------------------------------------------------------


def _status(text: str) -> str:
    """A `statusMessage`, bounded (it quotes the upstream's own progress text)."""
    return B.cut_text(" ".join(text.split()), B.MAX_TASK_STATUS_CHARS)


def progress_message(out: JobOutput) -> str:
    """`statusMessage` of a running job: percent, phase, ETA and what the API said."""
    state = out.state.value if out.state is not None else "running"
    progress = out.progress
    if progress is None:
        return f"{state}: no progress reported yet"
    parts: list[str] = []
    if progress.percent is not None:
        parts.append(f"{progress.percent:.0f}% done")
    if progress.phase:
        parts.append(f"phase {progress.phase}")
    if progress.eta_seconds:
        from mcp_server._duration import format_duration

        parts.append(f"about {format_duration(progress.eta_seconds)} left")
    head = ", ".join(parts) or state
    return _status(f"{head}: {progress.message}" if progress.message else head)


def poll_interval_ms(bounds: tuple[int, int], next_check: float | None) -> int:
    """`pollIntervalMs` for a task: the job's `next_check_after_seconds` within the provider's
    `task_poll_ms` bounds (its own cadence), the high bound when it gave none."""
    low, high = bounds
    wanted = int((next_check if next_check is not None else high / 1000) * 1000)
    return max(low, min(high, wanted))


def _done_message(out: JobOutput) -> str:
    if out.error is not None:
        return f"ended: {out.error.code.value}"
    return f"ended: {out.state.value if out.state is not None else 'finished'}"


def _service_name(rt: Runtime, provider: str) -> str:
    """How texts name the provider's service: `Seamless.ai`, `AgentSEO`."""
    return rt.providers.get(provider).service_name


def _none_can(rt: Runtime) -> str:
    """`Neither Seamless.ai nor AgentSEO can`; `None of A, B or C can` (no provider can
    stop a job once started: the provider protocol has no cancel)."""
    names = [p.service_name for p in rt.providers]
    if len(names) == 1:
        return f"{names[0]} cannot"
    if len(names) == 2:
        return f"Neither {names[0]} nor {names[1]} can"
    return f"None of {', '.join(names[:-1])} or {names[-1]} can"


def _poll_ms(rt: Runtime, provider: str) -> tuple[int, int]:
    return rt.providers.get(provider).task_poll_ms


#: Distinct callers remembered between a task request's owner check and its start.
MAX_CALLERS = 1024


# ---- the adapter -------------------------------------------------------------------------------


SUBMIT_MARGIN_SECONDS = 5.0
"""Beyond `JOBRELAY_MAX_WAIT_SECONDS` (every submit's time limit), how long a submit row stays
"maybe in flight on another replica" before it is judged outcome unknown."""


def _submitting_elsewhere(rt: Runtime, rec: JobRecord) -> bool:
    """Whether another replica may still be submitting `rec`: replicas share the ledger
    (and Redis), and a submit row younger than one call's time limit (plus a margin) may
    be another replica's call in flight. Past that, it died with its process (outcome
    unknown). A single process knows its own submits (`submitting`)."""
    if rt.fanout is None or rec.upstream_ids:
        return False
    age = rt.clock.time() - rec.created_at.timestamp()
    return age < rt.settings.max_wait_seconds + SUBMIT_MARGIN_SECONDS


@dataclass
class JobTasks:
    """The jobrelay side of the tasks engine (see the module docstring)."""

    server: JobRelayServer
    runtime: Runtime | None = None
    engine: TaskEngine | None = None
    callers: OrderedDict[str, Caller] = field(default_factory=OrderedDict)
    """Owner key -> the caller it was made from, newest last, at most `MAX_CALLERS` (the starter
    reads it right after `owner`; without a bound a long-running HTTP server kept one entry per
    tenant it ever saw)."""
    live: dict[str, str] = field(default_factory=dict)
    """Task id -> the follower's latest progress text (fresher than the ledger's snapshot)."""
    following: dict[str, anyio.CancelScope] = field(default_factory=dict)
    submitting: set[str] = field(default_factory=set)
    """Job handles whose submit runs in this process now (their row says `submitting`)."""
    _group: anyio.abc.TaskGroup | None = None
    _swept_at: float | None = None

    # -- wiring ---------------------------------------------------------------------------------

    def attach(self, runtime: Runtime, engine: TaskEngine, group: anyio.abc.TaskGroup) -> None:
        """Use `runtime` and `engine`; run submits and followers in `group`."""
        self.runtime, self.engine, self._group = runtime, engine, group

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        if self._group is None:
            raise RuntimeError("the tasks adapter is used outside the server's lifespan")

        async def run() -> None:
            await fn()

        self._group.start_soon(run)

    def _rt(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the tasks adapter is used outside the server's lifespan")
        return self.runtime

    def _engine(self) -> TaskEngine:
        if self.engine is None:
            raise RuntimeError("the tasks adapter is used outside the server's lifespan")
        return self.engine

    async def sweep_if_due(self) -> None:
        """Delete expired task rows, at most once per `SWEEP_SECONDS` (checked when a task
        starts, so no timer runs on the server's clock)."""
        now = self._rt().clock.time()
        if self._swept_at is not None and now - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = now
        try:
            await self._engine().sweep()
        except Exception:  # a storage fault must not stop the task from starting
            log.exception("deleting expired tasks failed; trying again later")

    # -- owner ------------------------------------------------------------------------------------

    def owner(self, ctx: ServerRequestContext[Any, Any]) -> str:
        from mcp_server.tools import caller_from_request

        try:
            caller = caller_from_request(ctx.lifespan_context, ctx.request)
        except InputProblem as exc:
            if ctx.method == "tools/call":
                # No task (the starter finds no caller): the ordinary call refuses the header
                # as an isError result, as it does for every client.
                return _NO_OWNER
            raise MCPError(INVALID_PARAMS, exc.message) from None
        key = owner_key(caller)
        self.remember(key, caller)
        return key

    def remember(self, key: str, caller: Caller) -> None:
        self.callers[key] = caller
        self.callers.move_to_end(key)
        while len(self.callers) > MAX_CALLERS:
            self.callers.popitem(last=False)

    # -- starter ----------------------------------------------------------------------------------

    async def start(self, call: TaskCall) -> None:
        await self.sweep_if_due()
        args = await self.server.task_arguments(call.tool, dict(call.arguments))
        caller = self.callers.get(call.owner)
        if args is None or caller is None:
            return  # not valid: the ordinary call answers with the tool's own error
        if call.tool == "wait_for_job":
            await self._start_wait(call, caller, str(args["job_id"]))
        else:
            await self._start_job(call, caller, args)

    async def _start_wait(self, call: TaskCall, caller: Caller, job_id: str) -> None:
        rec = await self._find(caller, job_id.strip())
        if rec is None:
            return  # the ordinary call says "no such job" with its advice
        out = cast("JobOutput", (await self._rt().service.describe(caller, rec.job_id)).output)
        task = await call.open(
            f"{rec.job_id}/wait-{secrets.token_hex(6)}",
            status_message=progress_message(out),
            poll_interval_ms=poll_interval_ms(
                _poll_ms(self._rt(), rec.provider), out.next_check_after_seconds
            ),
        )
        self._follow(task, caller)

    async def _find(self, caller: Caller, job_id: str) -> JobRecord | None:
        ledger = self._rt().ledger
        provider = provider_for_job_id(job_id)
        for p in [provider] if provider else self._rt().providers.names():
            tenant = caller.tenant(p)
            rec = await ledger.get(job_id, tenant=tenant)
            if rec is None:
                rec = await ledger.find_by_upstream_id(job_id, tenant=tenant)
            if rec is not None:
                return rec
        return None

    async def _start_job(self, call: TaskCall, caller: Caller, args: dict[str, Any]) -> None:
        rt = self._rt()
        decided = anyio.Event()
        ended: list[CallToolResult] = []
        intents: list[JobRecord] = []  # the job's row, once written (for a crash's log line)

        async def on_intent(record: JobRecord) -> None:
            if call.task is not None or call.answered is not None:
                return  # a second row of the same job (a split research part)
            intents.append(record)
            self.submitting.add(record.job_id)
            await call.open(
                record.job_id,
                status_message=f"submitting to {_service_name(rt, record.provider)}",
                poll_interval_ms=_poll_ms(rt, record.provider)[0],
            )
            decided.set()

        async def submit() -> Outcome:
            service = rt.service
            kwargs = {k: v for k, v in args.items() if k != "wait_seconds"}
            if call.tool == "start_research":
                return await service.start_research(caller, **kwargs, wait_seconds=0, progress=None)
            return await service.start_seo(caller, **kwargs, wait_seconds=0, progress=None)

        async def run() -> None:
            from mcp_server.tools import outcome_result

            token = _ON_INTENT.set(on_intent)
            try:
                result = await outcome_result(rt.service, call.tool, submit)
            except Exception:  # a jobrelay bug: logged; the task (if any) says failed
                job = intents[0] if intents else None
                extra = {} if job is None else {"job_id": job.job_id, "provider": job.provider}
                log.exception("background %s crashed", call.tool, extra=extra)
                result = None
            finally:
                _ON_INTENT.reset(token)
            task = call.task
            if task is None:
                if result is not None:
                    ended.append(result)
                decided.set()
                return
            self.submitting.discard(job_of(task.handle))
            engine = self._engine()
            if result is None:
                await engine.update(task.task_id, _internal_failure(job_of(task.handle)))
            elif result.is_error:
                # The submit failed after its row was written (refused, or outcome unknown):
                # the task ends with exactly the tool's answer, advice included.
                await engine.update(
                    task.task_id,
                    TaskUpdate(status="completed", result=result, status_message="ended: error"),
                )
            else:
                await engine.refresh(task.task_id)
                self._follow(task, caller)

        self._spawn(run)
        with anyio.fail_after(rt.settings.max_wait_seconds + 30):
            await decided.wait()
        if call.task is None:
            call.answer(ended[0] if ended else _internal_result(call.tool))

    # -- resolver ---------------------------------------------------------------------------------

    async def resolve(self, record: TaskRecord) -> TaskUpdate | None:
        rt = self._rt()
        caller = self.callers.get(record.owner)
        if caller is None:
            return None  # nobody with this task's keys asked since the start: keep it as stored
        job_id = job_of(record.handle)
        provider = _provider(record.handle)
        tenant = caller.tenant(provider)
        rec = await rt.ledger.get(job_id, tenant=tenant)
        if rec is None:
            return TaskUpdate(
                status="completed",
                result=_result(_removed(job_id, provider, _service_name(rt, provider))),
                status_message="ended: job removed from the ledger",
            )
        submitting = rec.state is JobState.UNKNOWN and (
            job_id in self.submitting or _submitting_elsewhere(rt, rec)
        )
        if rec.state.terminal or (not rec.upstream_ids and not submitting):
            # Terminal, or a submit that died with its process (outcome unknown): render it
            # as wait_for_job does (no upstream call for either).
            outcome = await rt.service.wait(caller, job_id, wait_seconds=0, progress=None)
            result = _result(outcome)
            out = cast("JobOutput", outcome.output)
            return TaskUpdate(status="completed", result=result, status_message=_done_message(out))
        if submitting:
            return None
        out = cast("JobOutput", (await rt.service.describe(caller, job_id)).output)
        self._follow(record, caller)
        return TaskUpdate(
            status_message=self.live.get(record.task_id) or progress_message(out),
            poll_interval_ms=poll_interval_ms(
                _poll_ms(self._rt(), rec.provider), out.next_check_after_seconds
            ),
        )

    # -- canceller ---------------------------------------------------------------------------------

    async def cancel(self, record: TaskRecord) -> TaskUpdate:
        scope = self.following.pop(record.task_id, None)
        if scope is not None:
            scope.cancel()
        job_id = job_of(record.handle)
        name = _service_name(self._rt(), _provider(record.handle))
        return TaskUpdate(
            status="cancelled",
            status_message=(
                f"jobrelay stopped following job {job_id}. {_none_can(self._rt())} "
                f"stop a job once started, so {name} may still finish it, and credits "
                "spent are not refunded. The job stays in the ledger: "
                f'wait_for_job(job_id="{job_id}") or list_jobs() finds it.'
            ),
        )

    # -- follower ----------------------------------------------------------------------------------

    def _follow(self, record: TaskRecord, caller: Caller) -> None:
        if record.terminal or record.task_id in self.following:
            return
        scope = anyio.CancelScope()
        self.following[record.task_id] = scope
        self._spawn(lambda: self._run_follower(record, caller, scope))

    async def _run_follower(
        self, record: TaskRecord, caller: Caller, scope: anyio.CancelScope
    ) -> None:
        rt = self._rt()
        engine = self._engine()
        task_id = record.task_id
        job_id = job_of(record.handle)

        progressed = [""]
        """The latest progress text, without any failed-check note."""

        async def progress(percent: float, message: str | None) -> None:
            text = f"{percent:.0f}% done"
            self.live[task_id] = progressed[0] = _status(f"{text}: {message}" if message else text)
            await engine.refresh(task_id)

        try:
            with scope:
                while True:
                    try:
                        outcome = await rt.service.wait(
                            caller,
                            job_id,
                            wait_seconds=rt.settings.max_wait_seconds,
                            progress=progress,
                        )
                    except JobRelayError:
                        outcome = None  # e.g. the job was removed: the resolver says so
                    now = await engine.refresh(task_id)
                    if now is None or now.terminal:
                        return
                    out = None if outcome is None else cast("JobOutput", outcome.output)
                    if out is None or out.advice is not None:
                        # The last check failed (rate limited, unreachable): say so, and wait
                        # for the hint it came with.
                        pause = (out and out.next_check_after_seconds) or _FOLLOW_RETRY_SECONDS
                        pause = max(1.0, pause)
                        why = out.advice.title if out and out.advice else "the check failed"
                        self.live[task_id] = _status(
                            f"Last check failed ({why}); next check in {pause:.0f} s. "
                            f"{progressed[0]}"
                        )
                        await engine.refresh(task_id)
                        await rt.clock.sleep(pause)
        except Exception:  # a jobrelay bug: the one case a task fails
            log.exception(
                "following job %s for task %s crashed", job_id, task_id, extra={"job_id": job_id}
            )
            await engine.update(task_id, _internal_failure(job_id))
        finally:
            if self.following.get(task_id) is scope:
                del self.following[task_id]
            self.live.pop(task_id, None)


def _removed(job_id: str, provider: str, service: str) -> Outcome:
    """The answer for a task whose job row is gone (removed from the ledger after it began)."""
    next_step = "Call list_jobs() to see the jobs the ledger still keeps."
    error = ErrorInfo(
        code=ErrorCode.NOT_FOUND, retryable=False, next_step=next_step, provider=provider
    )
    text = (
        f"Job {job_id} is no longer in the ledger (it was removed after this task began), so "
        f"nothing more can be reported about it; {service} may still have finished it, "
        f"and nothing was resubmitted. Next: {next_step} Do not start it again just to find out."
    )
    return Outcome(JobOutput(job_id=job_id, error=error), text, failed=True)


def _result(outcome: Outcome) -> CallToolResult:
    from mcp_server.tools import to_result

    return to_result(outcome)


def _internal_failure(job_id: str) -> TaskUpdate:
    return TaskUpdate(
        status="failed",
        error={
            "code": INTERNAL_ERROR,
            "message": (
                f"jobrelay could not follow job {job_id} (an internal error, logged on the "
                f'server). The job is in the ledger: wait_for_job(job_id="{job_id}") '
                "follows it again."
            ),
        },
    )


def _internal_result(tool: str) -> CallToolResult:
    from mcp_server.tool_results import internal_error_result

    return internal_error_result(tool)
