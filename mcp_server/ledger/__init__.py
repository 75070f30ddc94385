"""The job ledger: one durable row per job handle, so paid work is never lost or paid twice.

Agents lose job ids (a call times out, a host restarts, a context is compacted) and then pay
again. The ledger keeps every job jobrelay starts: provider, operation, the request as sent,
upstream ids, the unified state beside the raw one, the last snapshot, the result, errors,
credits, and who started it (a key fingerprint, never the key).

How the tool layer uses it (DESIGN.md section 2.1-2.2; `target_keys` is in
`mcp_server.providers.seamless.targets`):

```
record = JobRecord.new(provider="seamless", operation="research_contacts", tenant=fingerprint,
                       sandbox=..., params=body, credits_requested=n,
                       targets=target_keys("contacts", contacts=..., search_result_ids=...))
earlier = await ledger.recent_targets(record.targets, tenant=fingerprint)  # warn first
record = await ledger.record_intent(record, budget=settings.credit_budget)  # or BudgetExceeded
...the credit-spending POST...
await ledger.complete_submit(record.job_id, upstream_ids=ids, state=..., raw_status=...)
#   or fail_submit(..., processed="no")    provably not processed (connect error, 429, 4xx)
#   or fail_submit(..., processed="maybe") ambiguous (timeout after send, 5xx): stays `unknown`
await ledger.update(record.job_id, state=..., raw_status=..., snapshot=..., result=...)
```

After a restart nothing is resumed eagerly: `get`/`find_by_upstream_id`/`lookup` resolve handles
and upstream ids from the file, and the next status call or wait polls whatever is not finished
(`nonterminal()` lists those). A row still `submitting` whose process is gone died between the
intent and the answer: it has no upstream ids to poll and must be treated as `outcome_unknown`.

Decisions, briefly:

- **Intent before action.** `record_intent` commits with `synchronous=FULL` (the WAL is fsynced
  before it returns), and so do `complete_submit`/`fail_submit`: those rows are money and upstream
  ids that cannot be asked for again. Status updates commit with `synchronous=NORMAL`: after a
  power cut the worst loss is the latest snapshot, which the next poll fetches again.
- **Terminal states are sticky.** A stale poll that says `running` after another writer stored
  `succeeded` is dropped, so concurrent pollers (two processes) can never lose a result.
- **The credit budget is per ledger** ("research credits this ledger may spend per UTC day"),
  counted over every tenant, and separately for sandbox and real jobs (sandbox credits are not
  money; a demo must not use up a real day's budget). It counts credits *requested* by Seamless
  research jobs created since UTC midnight, except those rejected before processing: a job whose
  outcome is unknown may have spent them. `record_intent(..., budget=)` checks and inserts in one
  transaction, so concurrent starts (even from two processes) cannot overshoot it.
- **Opening never repairs.** A damaged file, another application's database, a schema newer than
  this code, a lock held beyond `busy_timeout` or an unwritable path raise `LedgerError` naming the
  file and what to do. The file is left exactly as it was.
- `LedgerError` is not a `JobRelayError`: it is a local storage fault (like `ConfigError`), with
  no upstream error code, and must never be turned into "retry the API" advice.

Backends: `base.py` is the contract (`Ledger`, its `TaskLedger` for the MCP task rows,
`JobRecord`, handles); `sqlite.py` the local file, `postgres.py` a PostgreSQL database shared by
replicas (JOBRELAY_DB=postgresql://...); `open_ledger(settings)` is the one place a backend is
chosen. Each backend is parts on one store (its job rows, its task rows and secrets, its schema
and migrations) under the rules they share (`_core.py`: `RowLedger`, the budget check, what each
write changes) and one row encoding (`_codec.py`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from mcp_server.ledger._sqlite_schema import (
    DEFAULT_BUSY_TIMEOUT,
    SCHEMA_VERSION,
    check_ledger_location,
)
from mcp_server.ledger.base import (
    CREDIT_BUDGET_PROVIDERS,
    JOB_ID_PREFIXES,
    RAW_OUTCOME_UNKNOWN,
    RAW_REJECTED,
    RAW_SUBMITTING,
    ErrorLike,
    JobRecord,
    JsonDict,
    Ledger,
    LedgerError,
    LedgerProblem,
    TaskLedger,
    new_job_id,
    next_utc_midnight,
    params_fingerprint,
    provider_for_job_id,
    register_credit_budget,
    register_job_id_prefix,
    unregister_credit_budget,
    unregister_job_id_prefix,
)
from mcp_server.ledger.sqlite import SqliteLedger

if TYPE_CHECKING:
    from mcp_server._clock import Clock
    from mcp_server.config import Settings

__all__ = [
    "CREDIT_BUDGET_PROVIDERS",
    "DEFAULT_BUSY_TIMEOUT",
    "JOB_ID_PREFIXES",
    "RAW_OUTCOME_UNKNOWN",
    "RAW_REJECTED",
    "RAW_SUBMITTING",
    "SCHEMA_VERSION",
    "ErrorLike",
    "JobRecord",
    "JsonDict",
    "Ledger",
    "LedgerError",
    "LedgerProblem",
    "SqliteLedger",
    "TaskLedger",
    "check_ledger_location",
    "new_job_id",
    "next_utc_midnight",
    "open_ledger",
    "params_fingerprint",
    "provider_for_job_id",
    "register_credit_budget",
    "register_job_id_prefix",
    "unregister_credit_budget",
    "unregister_job_id_prefix",
]


def open_ledger(
    settings: Settings, *, clock: Clock | None = None
) -> AbstractAsyncContextManager[Ledger]:
    """The ledger the settings name (JOBRELAY_DB), opened, checked and migrated; closed on exit.

    The one place a backend is chosen: a `postgresql://` URL is a PostgreSQL database
    (`PostgresLedger`, needs the `postgres` extra), a path an SQLite file (`SqliteLedger`).
    """
    if settings.db_url is not None:
        from mcp_server.ledger.postgres import PostgresLedger

        return PostgresLedger.open(settings.db_url.get_secret_value(), clock=clock)
    return SqliteLedger.open(settings.db_path, clock=clock)
