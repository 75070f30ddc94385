"""Reading AgentSEO job envelopes, as client models or as stored in the ledger (dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel

from mcp_server._duration import format_duration
from mcp_server.models import JobState

NAME: Final[Literal["agentseo"]] = "agentseo"

AGENTSEO_STATES: Mapping[str, JobState] = {
    "queued": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "completed": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
}


def agentseo_state(raw: str | None) -> JobState:
    return AGENTSEO_STATES.get((raw or "").lower(), JobState.RUNNING)


def clamp_pct(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(max(0.0, min(100.0, value)))
    return None


def nonneg(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return None


def env_id(env: Any) -> str:
    return str(_get(env, "job_id", "jobId") or "")


def env_status(env: Any) -> str:
    return str(_get(env, "status") or "unknown")


def env_phase(env: Any) -> str | None:
    phase = _get(env, "phase")
    return str(phase) if phase else None


def env_percent(env: Any) -> float | None:
    return clamp_pct(_get(_get(env, "progress"), "percent"))


def env_result(env: Any) -> Any:
    result = _get(env, "result")
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True)
    return result


def env_error(env: Any) -> dict[str, Any] | None:
    err = _get(env, "error")
    if isinstance(err, BaseModel):
        return err.model_dump(mode="json", by_alias=True)
    return dict(err) if isinstance(err, Mapping) else None


def env_dump(env: Any) -> dict[str, Any]:
    if isinstance(env, BaseModel):
        return env.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(env) if isinstance(env, Mapping) else {}


def env_progress_text(env: Any) -> str:
    phase = env_phase(env)
    msg = _get(env, "message")
    eta = nonneg(_get(_get(env, "progress"), "eta_seconds"))
    parts = [p for p in (phase, str(msg) if msg else None) if p]
    text = ": ".join(parts) if parts else env_status(env)
    if eta:
        text += f" (about {format_duration(eta)} left)"
    return text
