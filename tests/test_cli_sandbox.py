"""`python -m mcp_server sandbox` as a real process on loopback: the URLs it prints work."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import anyio
import httpx
import pytest
from anyio.abc import Process

pytestmark = [pytest.mark.anyio, pytest.mark.loopback, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _read_banner(process: Process) -> str:
    """stderr up to the end of the banner, which the command prints once it is listening."""
    assert process.stderr is not None
    text = ""
    async for chunk in process.stderr:
        text += chunk.decode()
        if "control:" in text and text.endswith("\n"):
            return text
    raise AssertionError(f"the sandbox exited before announcing its URLs: {text!r}")


async def test_sandbox_command_serves_both_apis_at_the_printed_base_urls() -> None:
    port = _free_port()
    command = [
        sys.executable, "-m", "mcp_server", "sandbox",
        "--host", "127.0.0.1", "--port", str(port), "--seed", "3",
    ]  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    async with await anyio.open_process(command, stdout=subprocess.DEVNULL) as process:
        try:
            with anyio.fail_after(20):
                banner = await _read_banner(process)
            urls = dict(re.findall(r"(SEAMLESS_BASE_URL|AGENTSEO_BASE_URL)=(\S+)", banner))
            assert urls == {
                "SEAMLESS_BASE_URL": f"{root}/seamless/api/client/v1",
                "AGENTSEO_BASE_URL": f"{root}/agentseo/api/v1",
            }
            async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
                with anyio.fail_after(20):
                    seamless = await http.post(
                        f"{urls['SEAMLESS_BASE_URL']}/search/contacts",
                        headers={"Token": "any-key"},
                        json={"limit": 1},
                    )
                    agentseo = await http.get(
                        f"{urls['AGENTSEO_BASE_URL']}/jobs/no-such-job",
                        headers={"x-api-key": "any-key"},
                    )
                    stats = (await http.get(f"{root}/_sandbox/stats")).json()
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()

    assert seamless.status_code == 200
    assert len(seamless.json()["data"]) == 1
    assert seamless.headers["x-ratelimit-remaining"] == "59"
    assert len(seamless.headers.get_list("date")) == 1  # only the sandbox's virtual Date
    assert agentseo.status_code == 404
    assert stats["responses"]["seamless POST /search/contacts 200"] == 1
    assert stats["responses"]["agentseo GET /jobs/{job_id} 404"] == 1
    assert stats["faults"]["seed"] == 3
