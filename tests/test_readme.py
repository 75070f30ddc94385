"""The README is the only page a newcomer reads: these tests keep it true.

Its set-up commands come first, every `jobrelay` command in it parses (and the examples run),
every environment variable, tool, argument, resource, error code and scenario key it names
exists, and the host snippets are exactly the files in `manifests/clients/`.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras
import pytest

from mcp_server.cli import _build_parser, main
from mcp_server.config import Variable, variables
from mcp_server.models import ErrorCode
from mcp_server.sandbox import SCENARIO_KEYS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

RUN_DEMO = "python3 -m venv .venv && . .venv/bin/activate && pip install . && jobrelay demo"
RUN_TESTS = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && pytest --cov'
)

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(lang: str | None = None) -> list[tuple[str, str, int]]:
    """(language, body, offset) of each fenced block, in order."""
    found = [(m.group(1), m.group(2), m.start()) for m in _FENCE.finditer(README)]
    return [b for b in found if lang is None or b[0] == lang]


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def _table(section: str) -> list[list[str]]:
    """The rows (cells stripped) of the first markdown table in `section`, header excluded."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip().strip("|").split(" | ")] for row in rows[2:]]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# ---- the first screen ---------------------------------------------------------------------------


def test_the_first_two_code_blocks_are_the_two_setup_commands() -> None:
    first, second = _blocks()[:2]
    assert first[:2] == ("bash", RUN_DEMO + "\n")
    assert second[:2] == ("bash", RUN_TESTS + "\n")
    assert README[: second[2]].rstrip().endswith("<!-- test-command -->")
    # Both are on the first screen: a stranger sees them without scrolling far.
    assert README[: second[2]].count("\n") < 30


def test_ci_extracts_the_readme_test_command_from_the_marker() -> None:
    """Mirror of the awk line in .ci/run: the first line of the block after the marker."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci
    after = README.split("<!-- test-command -->", 1)[1]
    body = after.split("```", 2)[1]
    assert body.splitlines()[1] == RUN_TESTS


def test_the_first_sentence_says_what_it_is() -> None:
    intro = README.split("\n\n")[2]
    assert intro.startswith("**jobrelay** is an MCP server that lets AI agents start")
    assert intro.count(". ") == 0  # one sentence


# ---- commands -----------------------------------------------------------------------------------


def _is_jobrelay(token: str) -> bool:
    return token == "jobrelay" or token.endswith(("/jobrelay", "$(command -v jobrelay)"))


def _jobrelay_invocations() -> Iterator[tuple[str, list[str]]]:
    """(shell line, argv after `jobrelay`) for each jobrelay command in a bash block.

    A command is a simple command whose program (after `VAR=value` words) is `jobrelay`;
    for `claude mcp add NAME -- PROGRAM ARGS`, the program after `--`; for `npx PACKAGE ...`,
    the first argument that is the jobrelay program.
    """
    for _, body, _ in _blocks("bash"):
        for line in body.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            commands: list[list[str]] = [[]]
            for token in lexer:
                if token in {"&&", "||", ";", "|"}:
                    commands.append([])
                else:
                    commands[-1].append(token)
            for command in commands:
                words = command
                if words[:3] == ["claude", "mcp", "add"]:
                    words = words[words.index("--") + 1 :] if "--" in words else []
                elif words[:1] == ["npx"]:  # e.g. the MCP Inspector starting the server
                    starts = [i for i, w in enumerate(words) if _is_jobrelay(w)]
                    words = words[starts[0] :] if starts else []
                    # The Inspector's own options follow the server command.
                    if "--method" in words:
                        words = words[: words.index("--method")]
                while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                    words = words[1:]
                if words and _is_jobrelay(words[0]):
                    yield line, words[1:]


def test_every_jobrelay_command_in_the_readme_parses() -> None:
    parser = _build_parser()
    seen = set()
    for line, argv in _jobrelay_invocations():
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # pragma: no cover - the failure message is the point
            pytest.fail(f"README command does not parse: {line}")
        seen.add(args.command)
    assert seen == {"demo", "serve", "doctor", "explain", "sandbox"}


def test_the_readme_explain_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    examples = [argv for _, argv in _jobrelay_invocations() if argv[:1] == ["explain"]]
    assert len(examples) == 3
    now = int(time.time())  # what the shell's $(date +%s) gives when the reader runs it
    for argv in examples:
        expanded = [
            re.sub(r"\$\(\( \$\(date \+%s\) \+ (\d+) \)\)", lambda m: str(now + int(m[1])), a)
            for a in argv
        ]
        assert main(expanded) == 0
    out = capsys.readouterr().out
    assert "Rate limited by Seamless (HTTP 429, rate_limited)" in out
    # A reset relative to the reader's clock: never a time already past, whenever it is run.
    assert re.search(r"Retry: yes, after \d\d:\d\d:\d\dZ \(in (89|90) s\)\.", out), out
    assert "Seamless research credits exhausted (HTTP 422, credits_exhausted)" in out
    assert "SEO job failed (AgentSEO, job status failed" in out
    assert not re.search(r"Reset[:\"= ]+\d{9,}", README)  # no fixed epoch: it would pass


def test_the_stdio_snippets_and_claude_code_start_the_same_server() -> None:
    stdio = [argv for line, argv in _jobrelay_invocations() if "claude mcp add" in line]
    assert stdio
    assert all(argv == ["serve"] for argv in stdio), stdio


def test_claude_mcp_add_gets_its_env_flags_where_claude_code_accepts_them() -> None:
    """`claude mcp add NAME --env K=V ... -- CMD`: `--env` is variadic in Claude Code, so
    before the name it swallows it ("Invalid environment variable format")."""
    lines = [
        line
        for _, body, _ in _blocks("bash")
        for line in body.splitlines()
        if line.startswith("claude mcp add") and "--transport http" not in line
    ]
    with_env = [shlex.split(line) for line in lines if " --env " in line or " -e " in line]
    assert with_env, "the README shows how to pass the keys"
    for words in with_env:
        assert words[3] == "jobrelay", words  # the name comes right after `add`
        end = words.index("--")
        flags = words[4:end]
        assert flags[0::2] == ["--env"] * (len(flags) // 2), words
        assert all(re.fullmatch(r"[A-Z_]+=\S+", v) for v in flags[1::2]), words
        assert {v.split("=")[0] for v in flags[1::2]} <= _NAMES
    http = [argv for _, argv in _jobrelay_invocations() if "--transport" in argv]
    assert http == [["serve", "--transport", "http", "--host", "127.0.0.1", "--port", "8765"]]


def test_every_command_and_option_is_documented() -> None:
    parser = _build_parser()
    section = _section("Command line")
    subparsers = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, Any] = subparsers.choices  # type: ignore[assignment]  # argparse internals
    for name, sub in choices.items():
        assert f"`jobrelay {name}" in section
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in section, f"{name} {flag} is not in the Command line table"


# ---- configuration ------------------------------------------------------------------------------

_ENV_VAR = re.compile(r"\b(?:SEAMLESS|AGENTSEO|JOBRELAY)_[A-Z_]*[A-Z]\b")


_VARIABLES: list[Variable] = variables()
"""jobrelay's own variables and the registered providers' (their settings models)."""
_NAMES = {v.name for v in _VARIABLES}


def test_the_readme_names_exactly_the_environment_variables_settings_reads() -> None:
    assert set(_ENV_VAR.findall(README)) == _NAMES


def test_the_configuration_table_lists_every_variable_with_its_default() -> None:
    names = [_ticked(row[0])[0] for row in _table(_section("Configuration"))]
    rows = {_ticked(row[0])[0]: row[1] for row in _table(_section("Configuration"))}
    assert len(names) == len(rows)
    assert set(rows) == _NAMES
    # Each owner's variables (jobrelay's, each provider's) in the order it declares them; the
    # table interleaves the groups (keys and URLs first, OAuth after the core).
    for owner in {v.provider for v in _VARIABLES}:
        declared = [v.name for v in _VARIABLES if v.provider == owner]
        assert [n for n in names if n in declared] == declared, owner
    for variable in _VARIABLES:
        env, info = variable.name, variable.field
        cell = rows[env]
        if env == "JOBRELAY_DB":
            assert cell == "`jobs.sqlite3` in the user data directory"
        elif info.default is None:
            assert cell.startswith("unset"), env
        else:
            default = info.default
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            if isinstance(default, bool):
                shown = str(int(default))  # a switch: `0` / `1`, as the variable is written
            assert _ticked(cell)[0] == shown, env


# ---- tools and resources -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The server as built for serving; listing tools and resources starts nothing."""
    from mcp_server.config import load_settings
    from mcp_server.server import build_server

    db = tmp_path_factory.mktemp("ledger") / "jobs.sqlite3"
    return build_server(load_settings({"JOBRELAY_DB": str(db)}))


@pytest.fixture(scope="module")
def live_tools(server: Any) -> list[Any]:
    tools: list[Any] = anyio.run(server.list_tools)
    return tools


def _tool_rows() -> list[list[str]]:
    return _table(_section("Tools"))


def test_the_tool_table_lists_every_tool_in_order(live_tools: list[Any]) -> None:
    assert [_ticked(row[0])[0] for row in _tool_rows()] == [t.name for t in live_tools]


def test_the_tool_table_names_exactly_each_tools_arguments(live_tools: list[Any]) -> None:
    by_name = {t.name: t for t in live_tools}
    for row in _tool_rows():
        tool = by_name[_ticked(row[0])[0]]
        documented = _ticked(row[1])
        # The first mention of each argument, in order; later backticks may name settings.
        args = [a for a in dict.fromkeys(documented) if a in tool.input_schema["properties"]]
        assert args == list(tool.input_schema.get("properties", {})), tool.name
        unknown = [a for a in documented if a not in tool.input_schema["properties"]]
        assert all(a in _NAMES for a in unknown), (tool.name, unknown)


def test_every_example_call_is_valid_for_its_tool(live_tools: list[Any]) -> None:
    by_name = {t.name: t for t in live_tools}
    for row in _tool_rows():
        tool = by_name[_ticked(row[0])[0]]
        example = json.loads(_ticked(row[3])[0])
        schema = tool.input_schema
        jsonschema.validators.validator_for(schema)(schema).validate(example)
        assert set(example) <= set(schema.get("properties", {}))


def test_the_tool_table_matches_the_snapshot_when_there_is_one() -> None:
    snapshot = ROOT / "manifests" / "tools.json"
    if not snapshot.exists():
        pytest.skip("manifests/tools.json has not been generated yet")
    data = json.loads(snapshot.read_text(encoding="utf-8"))
    tools = data["tools"] if isinstance(data, dict) else data
    assert [_ticked(row[0])[0] for row in _tool_rows()] == [t["name"] for t in tools]


def test_the_resource_table_matches_the_server(server: Any) -> None:
    templates = anyio.run(server.list_resource_templates)
    served = [re.sub(r"\{\?[^}]*\}$", "", t.uri_template) for t in templates]
    documented = [_ticked(row[0])[0] for row in _table(_section("Resources"))]
    assert documented == served


# ---- errors, sandbox, snippets -------------------------------------------------------------------


def test_every_error_code_is_listed() -> None:
    section = _section("Errors, retries and rate limits")
    for code in ErrorCode:
        assert f"`{code.value}`" in section


def test_every_sandbox_scenario_key_is_documented() -> None:
    keys = [_ticked(row[0])[0] for row in _table(_section("The sandbox"))]
    assert sorted(keys) == sorted(SCENARIO_KEYS)


def test_every_sandbox_fault_knob_is_documented() -> None:
    from mcp_server.sandbox import Faults

    section = _section("The sandbox")
    for name in Faults.__dataclass_fields__:
        assert f"`{name}`" in section


def _client_blocks() -> dict[str, Any]:
    found = {}
    for match in re.finditer(
        r"<!-- client: ([\w-]+) -->\n```json\n(.*?)^```$", README, re.M | re.S
    ):
        found[match.group(1)] = json.loads(match.group(2))
    return found


def test_the_host_snippets_are_exactly_the_client_manifests() -> None:
    files = {
        p.stem: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((ROOT / "manifests" / "clients").glob("*.json"))
    }
    blocks = _client_blocks()
    assert sorted(blocks) == sorted(files)
    for name, data in files.items():
        assert blocks[name] == data, name


def test_every_json_block_in_the_readme_parses() -> None:
    for _, body, offset in _blocks("json"):
        try:
            json.loads(body)
        except ValueError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"JSON block at offset {offset} does not parse: {exc}")


def test_relative_links_point_at_files_in_the_repository() -> None:
    links = re.findall(r"\]\(((?!https?://|#)[^)]+)\)", README)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link


def test_the_contents_links_point_at_sections() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        for title in re.findall(r"^## (.+)$", README, re.MULTILINE)
    }
    for anchor in re.findall(r"\]\(#([^)]+)\)", README):
        assert anchor in anchors, anchor


def test_the_get_job_result_example_names_real_research_fields() -> None:
    """The `fields` example names fields a research result has (the Seamless OpenAPI's poll
    answer), not search-only or made-up ones."""
    reference = ROOT.parent / "shared" / "reference" / "seamless-openapi.json"
    if not reference.exists():
        pytest.skip("the Seamless OpenAPI reference is not beside this checkout")
    spec = json.loads(reference.read_text())
    poll = spec["paths"]["/contacts/research/poll"]["get"]["responses"]["200"]
    schema = poll["content"]["application/json"]["schema"]
    contact = schema["properties"]["data"]["items"]["properties"]["contact"]["properties"]
    [row] = [line for line in README.splitlines() if line.startswith("| `get_job_result` |")]
    [example] = re.findall(r'"fields": (\[[^\]]*\])', row)
    fields = json.loads(example)
    assert fields
    assert set(fields) <= set(contact), set(fields) - set(contact)
