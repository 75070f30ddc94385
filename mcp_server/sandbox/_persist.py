"""The embedded sandbox's jobs, kept across server restarts in one JSON file beside the ledger.

Without it, every host restart started a fresh sandbox: a research job still running came back
`not_found` ("do not resubmit the same target") and an SEO job stayed `queued` with 404 advice
while `list_jobs` and `wait_for_job` pointed at each other (issue 14.7). The ledger remembers
the job; now the simulated API remembers it too, so a restarted server's sandbox answers
for it exactly as before the restart, finishing it on schedule.

The file is `<JOBRELAY_DB>-sandbox`, mode 0600, replaced atomically (temporary file, fsync,
rename) each time a job is created, holding the newest `MAX_KEPT_JOBS` jobs of each API: what
each app needs to rebuild its jobs (job parameters, times, outcomes; records are regenerated
from the seed), never an API key: a job carries a fingerprint of the key that created it. A
file that cannot be read is set aside with a warning and the sandbox starts empty; one that
cannot be written is logged once.

Values are encoded as JSON with an explicit allowlist of dataclasses (`encode`/`decode`), so
reading the file never runs code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from mcp_server.json_types import JSON

log = logging.getLogger(__name__)

SANDBOX_FILE_SUFFIX: Final = "-sandbox"
FILE_VERSION: Final = 1
MAX_KEPT_JOBS: Final = 5000
"""Newest jobs per API written to the file: it is rewritten on every new job, so it stays
small (a few MB at most) however long the sandbox has been used."""

Dump = Callable[[], JSON]
"""An app's section of the file, JSON-ready (see `encode`)."""
Load = Callable[[JSON], None]


def sandbox_path(db_path: Path) -> Path:
    """Where the embedded sandbox keeps its jobs for the ledger at `db_path`."""
    return db_path.with_name(db_path.name + SANDBOX_FILE_SUFFIX)


def key_fingerprint(api_key: str) -> str:
    """Which key created a job, without keeping the key."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def encode(value: Any) -> Any:
    """JSON-ready form of dataclasses (tagged with their class name), tuples, lists, dicts
    and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__class__": type(value).__name__, **fields}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(value: Any, classes: Iterable[type[Any]]) -> Any:
    """The inverse of `encode`; only the dataclasses in `classes` are rebuilt (ValueError for
    any other class name)."""
    allowed = {cls.__name__: cls for cls in classes}
    return _decode(value, allowed)


def _decode(value: Any, allowed: dict[str, type[Any]]) -> Any:
    if isinstance(value, list):
        return [_decode(v, allowed) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v, allowed) for v in value["__tuple__"])
    name = value.get("__class__")
    if name is None:
        return {k: _decode(v, allowed) for k, v in value.items()}
    cls = allowed.get(name)
    if cls is None:
        raise ValueError(f"unexpected class {name!r} in the sandbox file")
    return cls(**{k: _decode(v, allowed) for k, v in value.items() if k != "__class__"})


class JobFile:
    """The sandbox file: sections registered by the API apps, loaded once, saved whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sections: dict[str, tuple[Dump, Load]] = {}
        self._loaded = self._read()
        self._write_failed = False

    def __repr__(self) -> str:
        return f"JobFile({str(self.path)!r})"

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("jobrelay sandbox: cannot read %s (%s); starting empty", self.path, exc)
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            self._set_aside(f"unreadable ({exc})")
            return {}
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
            self._set_aside("not a jobrelay sandbox file of this version")
            return {}
        sections = data.get("sections")
        return sections if isinstance(sections, dict) else {}

    def _set_aside(self, why: str) -> None:
        aside = self.path.with_name(self.path.name + ".unreadable")
        try:
            self.path.replace(aside)
        except OSError:
            aside = self.path
        log.warning(
            "jobrelay sandbox: %s is %s; kept as %s, starting with no sandbox jobs",
            self.path,
            why,
            aside,
        )

    def register(self, name: str, dump: Dump, load: Load) -> None:
        """Add an app's section and give it what the file held for it."""
        self._sections[name] = (dump, load)
        saved = self._loaded.pop(name, None)
        if saved is None:
            return
        try:
            load(saved)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning(
                "jobrelay sandbox: the %s jobs in %s could not be restored (%s); "
                "starting that API with no jobs",
                name,
                self.path,
                exc,
            )

    def save(self) -> None:
        """Write every section atomically (never a half-written file)."""
        data = {
            "version": FILE_VERSION,
            "sections": {name: dump() for name, (dump, _load) in self._sections.items()},
        }
        text = json.dumps(data, separators=(",", ":"))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning(
                    "jobrelay sandbox: cannot write %s (%s); sandbox jobs will not survive a "
                    "restart",
                    self.path,
                    exc,
                )
