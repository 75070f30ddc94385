"""The manifests in `manifests/` agree with the package: versions, tools, variables, commands.

`server.json` is validated against the MCP registry schema kept in `tests/schemas/` (a copy,
so the tests need nothing outside the repository). The host snippets are also started for
real: the stdio one as a subprocess through the SDK's stdio client, the HTTP one against
`jobrelay serve --transport http` on a loopback port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras
import pytest
from anyio.streams.text import TextReceiveStream
from conftest import CONTRACT_TOOLS
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_server import __version__
from mcp_server.cli import _build_parser
from mcp_server.config import variables
from mcp_server.upstream.agentseo import Plan

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")

TOOL_NAMES = list(CONTRACT_TOOLS)
VARIABLES = {v.name: v for v in variables()}
SECRET_ENV = {name for name, v in VARIABLES.items() if v.secret}
PLACEHOLDER = "/ABSOLUTE/PATH/TO/.venv/bin/jobrelay"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _jobrelay_executable() -> list[str]:
    """The installed console script next to this interpreter, else `python -m mcp_server`."""
    script = Path(sys.executable).with_name("jobrelay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcp_server"]


@pytest.fixture(scope="module")
def live_tool_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from mcp_server.config import load_settings
    from mcp_server.server import build_server

    db = tmp_path_factory.mktemp("ledger") / "jobs.sqlite3"
    tools = anyio.run(build_server(load_settings({"JOBRELAY_DB": str(db)})).list_tools)
    return [t.name for t in tools]


def test_the_tool_list_is_the_public_contract(live_tool_names: list[str]) -> None:
    assert live_tool_names == TOOL_NAMES


# ---- server.json (MCP registry) -----------------------------------------------------------------

SERVER = _load(MANIFESTS / "server.json")


def test_server_json_is_valid_for_the_registry_schema() -> None:
    schema = _load(ROOT / "tests" / "schemas" / "server.schema.json")
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(SERVER)
    assert SERVER["$schema"] == schema["$id"]


def test_the_schema_copy_matches_the_shared_one_when_present() -> None:
    shared = ROOT.parent / "shared" / "schemas" / "server.schema.json"
    if not shared.exists():
        pytest.skip("no ../shared next to this checkout")
    assert _load(shared) == _load(ROOT / "tests" / "schemas" / "server.schema.json")


def test_server_json_versions_and_package_match_pyproject() -> None:
    version = PYPROJECT["project"]["version"]
    assert __version__ == version
    [package] = SERVER["packages"]
    assert SERVER["version"] == package["version"] == version
    assert package["registryType"] == "pypi"
    assert package["identifier"] == PYPROJECT["project"]["name"] == "jobrelay"
    assert package["transport"] == {"type": "stdio"}
    assert PYPROJECT["project"]["scripts"] == {"jobrelay": "mcp_server.cli:main"}


def test_server_json_runs_jobrelay_serve() -> None:
    [package] = SERVER["packages"]
    argv = [a["value"] for a in package["packageArguments"]]
    assert argv == ["serve"]
    assert _build_parser().parse_args(argv).transport == "stdio"


def test_the_readme_mcp_name_marker_matches_server_json() -> None:
    assert f"<!-- mcp-name: {SERVER['name']} -->" in README
    # The registry checks the marker in the package's PyPI description, which is the README.
    assert PYPROJECT["project"]["readme"] == "README.md"
    assert SERVER["name"].split("/")[0] == "io.github.jobrelay"
    assert SERVER["repository"]["url"] == PYPROJECT["project"]["urls"]["Homepage"]


def test_server_json_documents_the_stdio_variables_with_their_defaults() -> None:
    [package] = SERVER["packages"]
    variables = {v["name"]: v for v in package["environmentVariables"]}
    # Everything except the HTTP transport's token and webhook secret, which a stdio package
    # never uses (a stdio server receives no webhooks).
    http_only = {"JOBRELAY_HTTP_TOKEN", "SEAMLESS_WEBHOOK_SECRET"}
    assert set(variables) == set(VARIABLES) - http_only
    assert {n for n, v in variables.items() if v.get("isSecret")} == SECRET_ENV - http_only
    assert variables["AGENTSEO_PLAN"]["choices"] == [p.value for p in Plan]
    for name, var in variables.items():
        default = VARIABLES[name].field.default
        if "default" in var:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            if isinstance(default, bool):
                shown = str(int(default))  # a switch: "0" / "1", as the variable is written
            assert var["default"] == shown, name
        else:
            assert default is None or name == "JOBRELAY_DB", name
        assert var["isRequired"] is False, name


# ---- MCP Bundle ---------------------------------------------------------------------------------

BUNDLE = _load(MANIFESTS / "mcpb" / "manifest.json")


def test_bundle_manifest_has_the_required_fields_and_version() -> None:
    assert BUNDLE["manifest_version"] == "0.4"  # the first with the uv server type
    for key in ("name", "version", "description", "author", "server"):
        assert BUNDLE[key], key
    assert BUNDLE["name"] == "jobrelay"
    assert BUNDLE["version"] == __version__
    assert BUNDLE["author"]["name"]
    requires = PYPROJECT["project"]["requires-python"]
    assert BUNDLE["compatibility"]["runtimes"]["python"] == requires


def test_bundle_tools_are_the_servers_tools(live_tool_names: list[str]) -> None:
    assert [t["name"] for t in BUNDLE["tools"]] == live_tool_names
    assert all(t["description"] for t in BUNDLE["tools"])


def test_bundle_starts_jobrelay_serve_through_uv() -> None:
    """A `uv` bundle (tests/test_mcpb.py builds one): uv runs the entry point, which serves."""
    server = BUNDLE["server"]
    assert server["type"] == "uv"
    config = server["mcp_config"]
    assert config["command"] == "uv"
    assert config["args"] == ["run", "--directory", "${__dirname}", server["entry_point"]]
    entry = (MANIFESTS / "mcpb" / server["entry_point"]).read_text()
    assert 'main(["serve"])' in entry
    assert _build_parser().parse_args(["serve"]).command == "serve"


def test_bundle_user_config_feeds_real_variables_and_hides_the_keys() -> None:
    env = BUNDLE["server"]["mcp_config"]["env"]
    user_config = BUNDLE["user_config"]
    used = set()
    for name, value in env.items():
        assert name in VARIABLES, name
        [ref] = re.findall(r"^\$\{user_config\.(\w+)\}$", value)
        used.add(ref)
        assert user_config[ref]["sensitive" if name in SECRET_ENV else "type"], name
        assert user_config[ref].get("sensitive", False) is (name in SECRET_ENV), name
    assert used == set(user_config)
    for key, option in user_config.items():
        assert option["type"] in {"string", "number", "boolean", "directory", "file"}, key
        assert option["title"], key
        assert option["description"], key
        # Optional settings default to "", which jobrelay reads as unset (never the literal
        # placeholder, which a host could otherwise pass through).
        assert option["required"] is False, key
        assert "default" in option, key
    assert user_config["agentseo_plan"]["default"] == Plan.HOBBY.value


# ---- host snippets ------------------------------------------------------------------------------

CLIENTS = {p.stem: _load(p) for p in sorted((MANIFESTS / "clients").glob("*.json"))}


def _server_entry(snippet: dict[str, Any]) -> dict[str, Any]:
    servers = snippet.get("mcpServers") or snippet.get("servers")
    assert isinstance(servers, dict)
    assert list(servers) == ["jobrelay"]
    entry: dict[str, Any] = servers["jobrelay"]
    return entry


def test_there_is_a_stdio_and_an_http_snippet_for_each_host() -> None:
    assert sorted(CLIENTS) == [
        "claude-code",
        "claude-code-http",
        "claude-desktop",
        "cursor",
        "cursor-http",
        "vscode",
        "vscode-http",
    ]


@pytest.mark.parametrize("name", [n for n in CLIENTS if not n.endswith("-http")])
def test_stdio_snippets_run_jobrelay_serve_with_the_key_variables(name: str) -> None:
    entry = _server_entry(CLIENTS[name])
    assert entry["command"] == PLACEHOLDER
    assert entry["args"] == ["serve"]
    assert _build_parser().parse_args(entry["args"]).transport == "stdio"
    assert sorted(entry["env"]) == ["AGENTSEO_API_KEY", "SEAMLESS_API_KEY"]


@pytest.mark.parametrize("name", [n for n in CLIENTS if n.endswith("-http")])
def test_http_snippets_point_at_the_readme_server_with_its_token(name: str) -> None:
    entry = _server_entry(CLIENTS[name])
    assert entry["url"] == "http://127.0.0.1:8765/mcp"
    assert entry.get("type", "http") == "http"
    [(header, value)] = entry["headers"].items()
    assert header == "Authorization"
    assert re.fullmatch(r"Bearer \$\{[\w:-]+\}", value), value
    assert "JOBRELAY_HTTP_TOKEN" in value or "input:" in value


def test_vscode_inputs_prompt_for_secrets_as_passwords() -> None:
    for name in ("vscode", "vscode-http"):
        snippet = CLIENTS[name]
        ids = {i["id"] for i in snippet["inputs"]}
        assert all(i["password"] is True for i in snippet["inputs"])
        used = set(re.findall(r"\$\{input:([\w-]+)\}", json.dumps(snippet["servers"])))
        assert used == ids


def _real_env(entry: dict[str, Any], db: Path) -> dict[str, str]:
    """The snippet's env as a host would pass it with no keys filled in: empty values."""
    env = dict.fromkeys(entry["env"], "")
    return env | {"JOBRELAY_DB": str(db)}


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_pasted_stdio_snippet_serves_the_tools_to_a_real_client(
    tmp_path: Path, live_tool_names: list[str]
) -> None:
    entry = _server_entry(CLIENTS["claude-desktop"])
    program, *prefix = _jobrelay_executable()
    params = StdioServerParameters(
        command=program, args=[*prefix, *entry["args"]], env=_real_env(entry, tmp_path / "j.db")
    )
    with anyio.fail_after(30):
        async with Client(params) as client:
            tools = await client.list_tools()
            usage = await client.call_tool("get_usage", {})
    assert [t.name for t in tools.tools] == live_tool_names
    assert not usage.is_error
    providers = (usage.structured_content or {})["providers"]
    assert [p["sandbox"] for p in providers] == [True, True]


def _readme_http_command() -> list[str]:
    for line in README.splitlines():
        if line.startswith("jobrelay serve --transport http"):
            return shlex.split(line)
    raise AssertionError("the README has no `jobrelay serve --transport http` line")


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_readme_http_server_and_snippet_work_with_a_real_client(
    tmp_path: Path, live_tool_names: list[str]
) -> None:
    argv = _readme_http_command()
    # Port 0: the OS picks a free port (no race with other servers), which jobrelay announces.
    argv[argv.index("--port") + 1] = "0"
    token = "t0ken-" + "x" * 40
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env |= {"JOBRELAY_HTTP_TOKEN": token, "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3")}
    program, *prefix = _jobrelay_executable()
    async with await anyio.open_process(
        [program, *prefix, *argv[1:]], env=env, stdout=subprocess.DEVNULL
    ) as process:
        try:
            assert process.stderr is not None
            announced = ""
            with anyio.fail_after(20):
                async for chunk in TextReceiveStream(process.stderr):
                    announced += chunk
                    if "/mcp" in announced:
                        break
            found = re.search(
                r"MCP over Streamable HTTP at http://127\.0\.0\.1:(\d+)/mcp", announced
            )
            assert found, announced
            port = int(found.group(1))
            await _use_the_http_server(port, token, live_tool_names)
        finally:
            process.terminate()
            with anyio.fail_after(20):
                await process.wait()


async def _use_the_http_server(port: int, token: str, tool_names: list[str]) -> None:
    """What a host pasting the Claude Code HTTP snippet does, plus the README's curl."""
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{port}/healthz")
        refused = await http.post(f"http://127.0.0.1:{port}/mcp", json={})
    assert health.json()["status"] == "ok"
    assert set(health.json()) == {"status", "ledger", "redis", "providers"}
    assert refused.status_code == 401

    entry = _server_entry(CLIENTS["claude-code-http"])
    url = entry["url"].replace(":8765", f":{port}")
    headers = {k: v.replace("${JOBRELAY_HTTP_TOKEN}", token) for k, v in entry["headers"].items()}
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as client_http,
            Client(streamable_http_client(url, http_client=client_http)) as client,
        ):
            tools = await client.list_tools()
    assert [t.name for t in tools.tools] == tool_names


# ---- tools.json ---------------------------------------------------------------------------------


def test_the_tool_snapshot_lists_the_servers_tools(live_tool_names: list[str]) -> None:
    snapshot = MANIFESTS / "tools.json"
    if not snapshot.exists():
        pytest.skip("manifests/tools.json has not been generated yet")
    data = _load(snapshot)
    tools = data["tools"] if isinstance(data, dict) else data
    assert [t["name"] for t in tools] == live_tool_names
