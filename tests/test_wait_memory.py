"""What every open wait and every answer hold, kept small: 1,000 concurrent waits make the scale
benchmark's peak RSS (BENCHMARKS.md, "Scale peak RSS"). Behaviour stays the same; these pin it."""

from __future__ import annotations

from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from mcp_server.jobs.following import Follower
from mcp_server.models import ErrorCode, ErrorInfo, JobState
from mcp_server.providers.base import Outcome
from mcp_server.schemas import JobOutput
from mcp_server.tools import to_result

pytestmark = pytest.mark.anyio


def test_the_many_answers_of_one_outcome_share_one_structured_dump() -> None:
    # The waiters of one job get one cached outcome; each used to dump it again.
    outcome = Outcome(JobOutput(job_id="j1", state=JobState.SUCCEEDED), "Done.")
    first, second = to_result(outcome), to_result(outcome)
    assert first.structured_content == {"job_id": "j1", "state": "succeeded"}
    assert second.structured_content is first.structured_content
    assert [c.model_dump() for c in second.content] == [c.model_dump() for c in first.content]


def test_a_shared_dump_keeps_every_key_of_the_error() -> None:
    error = ErrorInfo(code=ErrorCode.NOT_FOUND, retryable=False, next_step="Call list_jobs.")
    outcome = Outcome(JobOutput(error=error), "No such job.", failed=True)
    for result in (to_result(outcome), to_result(outcome)):
        assert result.is_error
        assert result.structured_content == {"error": error.model_dump(mode="json")}
        assert None in result.structured_content["error"].values()  # nulls kept there


async def test_a_jobs_fold_lives_while_any_waiter_uses_it_and_no_longer() -> None:
    follower = Follower(cast(Any, None), cast(Any, None))  # the folds need neither
    async with follower._shared_fold("j1") as first:
        async with follower._shared_fold("j1") as second:
            assert second is first
            assert first.users == 2
        assert follower._folds == {"j1": first}
        assert first.users == 1
    assert follower._folds == {}

    with pytest.raises(RuntimeError):
        async with follower._shared_fold("j1"):
            raise RuntimeError("the wait failed")
    assert follower._folds == {}

    with anyio.CancelScope() as scope:
        async with follower._shared_fold("j1") as fold:
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert fold.users == 0
    assert follower._folds == {}
