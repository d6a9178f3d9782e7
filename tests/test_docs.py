"""README.md and docs/*.md stay true: their commands work as written, their links lead somewhere, README stays short.

Every ```sh block is read command by command. `make` targets must exist, `manage.py` commands must parse with the
command's own parser, `curl` URLs must name a real endpoint, environment variables must be ones something reads.
Blocks preceded by `<!-- docs-test: run NAME -->` (invisible when the Markdown is rendered) are executed against a
live server, with the placeholders (SECRET, AUTH_REQ_ID, ACCESS_TOKEN, INITIAL_TOKEN, http://127.0.0.1:8000)
replaced by real values; each answer must have the shape of the JSON sample commented under its command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands, load_command_class
from django.test import Client
from django.urls import Resolver404, resolve

from approvals.channels import locmem
from approvals.models import ApprovalRequest
from tests.authz.tokens.test_rar import install_example_types

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Where the documentation says the development server is, and the address the phone section uses for it.
DOCS_BASE = "http://127.0.0.1:8000"
LAN_BASE = "http://192.168.1.20:8000"
PLACEHOLDERS = ("SECRET", "AUTH_REQ_ID", "ACCESS_TOKEN", "INITIAL_TOKEN")
RUN_MARKER = re.compile(r"^<!--\s*docs-test:\s*run\s+([\w-]+)\s*-->$")
# Every block this module executes, and the page it is on: a marker that disappears fails the run.
RUN_BLOCKS = {
    "try-it": "README.md",
    "admin": "README.md",
    "tokens": "docs/agents.md",
    "rar": "docs/agents.md",
    "token-exchange": "docs/agents.md",
    "register": "docs/agents.md",
    "scripts": "docs/admin.md",
}
# Programs a documented command may run; a new one needs a check here first.
PROGRAMS = {"make", ".venv/bin/python", "curl", "export", "docker", "openssl", "mkdir", "echo"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<"}


# --- reading the pages ------------------------------------------------------------------------------------------------


@dataclass
class Command:
    text: str  # as written, continuation lines included
    line: int  # in the page
    simple: list[list[str]]  # its simple commands (split at && ; | &), redirections dropped
    sample: list[str] = field(default_factory=list)  # the commented JSON answer under it, line by line

    @property
    def argv(self) -> list[str]:
        (argv,) = self.simple
        return argv


@dataclass
class Block:
    page: Path
    line: int
    language: str
    source: str
    run: str  # the name in its docs-test marker, or ""
    commands: list[Command]

    def where(self, line: int | None = None) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line if line is None else line}"


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def read_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        start = index
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        source = "\n".join(lines[start + 1 : end])
        marker = RUN_MARKER.match(lines[start - 1].strip()) if start > 0 else None
        language = fence.group(1)
        commands = parse_commands(source, first_line=start + 2) if language == "sh" else []
        blocks.append(Block(page, start + 1, language, source, marker.group(1) if marker else "", commands))
        index = end + 1
    return blocks


def parse_commands(source: str, *, first_line: int = 1) -> list[Command]:
    """Commands as a shell reads them (continuation lines, quotes over several lines), each with the JSON sample
    commented under it."""
    commands: list[Command] = []
    buffer: list[str] = []
    depth = 0  # open braces of the sample being read
    for offset, line in enumerate(source.splitlines()):
        stripped = line.strip()
        if not buffer:
            if stripped.startswith("#"):
                comment = stripped[1:].strip()
                if commands and (depth or (comment.startswith("{") and not commands[-1].sample)):
                    commands[-1].sample.append(comment)
                    depth += comment.count("{") - comment.count("}")
                continue
            if not stripped:
                continue
            depth = 0
        buffer.append(line)
        text = "\n".join(buffer)
        if text.endswith("\\"):
            continue
        try:
            simple = split_simple_commands(text)
        except ValueError:  # a quote still open: the command goes on
            continue
        commands.append(Command(text, first_line + offset - len(buffer) + 1, simple))
        buffer = []
    assert not buffer, f"unfinished command: {buffer}"
    return commands


def split_simple_commands(text: str) -> list[list[str]]:
    lexer = shlex.shlex(text.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    simple: list[list[str]] = [[]]
    redirected = False
    for token in lexer:
        if token in SEPARATORS:
            simple.append([])
        elif token in REDIRECTIONS:
            redirected = True
        elif redirected:
            redirected = False  # the file a redirection names
        else:
            simple[-1].append(token)
    return [argv for argv in simple if argv]


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_blocks(page)]


def sh_commands() -> Iterator[tuple[Block, Command]]:
    for block in all_blocks():
        for command in block.commands:
            yield block, command


def run_block(name: str) -> Block:
    (block,) = [block for block in all_blocks() if block.run == name]
    assert page_name(block.page) == RUN_BLOCKS[name]
    return block


# --- what the commands may name ---------------------------------------------------------------------------------------


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {name for name in re.findall(r"^([\w.-]+)\s*:(?![=:])", text, re.M) if not name.startswith(".")}


def settings_variables() -> tuple[set[str], set[str]]:
    """The environment variables config/settings.py reads, and those of them that may also come from NAME_FILE."""
    text = (ROOT / "config" / "settings.py").read_text()
    plain = set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    plain |= set(re.findall(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    secrets = set(re.findall(r"\benv_secret\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    return plain | secrets, secrets


def known_variable(name: str) -> bool:
    names, secrets = settings_variables()
    if name in names or name.removesuffix("_FILE") in secrets:
        return True
    if name.startswith("DJANGO_SUPERUSER_"):  # Django's createsuperuser --noinput
        return True
    # The example's own variables.
    return any(f'"{name}"' in path.read_text() for path in (ROOT / "examples").rglob("*.py"))


def split_environment(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    environment: dict[str, str] = {}
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        name, _, value = argv[0].partition("=")
        environment[name] = value
        argv = argv[1:]
    return environment, argv


def manage_parser_problem(arguments: list[str]) -> str:
    """Parse `manage.py <command> <arguments>` with the command's own parser; a description of what fails, or ""."""
    name, *options = arguments
    app = get_commands().get(name)
    if app is None:
        return f"no manage.py command {name!r}"
    command = app if not isinstance(app, str) else load_command_class(app, name)
    try:
        command.create_parser("manage.py", name).parse_args(options)
    except Exception as exc:  # CommandError from a parser not called from the command line
        return f"manage.py {name}: {exc}"
    return ""


def command_problems(argv: list[str]) -> list[str]:
    environment, argv = split_environment(argv)
    problems = [f"{name} is read by nothing" for name in environment if not known_variable(name)]
    if not argv:
        return problems
    program = argv[0]
    if program not in PROGRAMS:
        return [*problems, f"{program}: not a program this test knows how to check"]
    if "manage.py" in argv:
        at = argv.index("manage.py")
        in_container = argv[:2] == ["docker", "compose"] and argv[at - 1] == "python"
        if argv[:at] != [".venv/bin/python"] and not in_container:
            problems.append("run manage.py as `.venv/bin/python manage.py` (the virtualenv `make` creates)")
        problem = manage_parser_problem(argv[at + 1 :])
        return [*problems, problem] if problem else problems
    if program == "make":
        targets = makefile_targets()
        makefile = (ROOT / "Makefile").read_text()
        for word in argv[1:]:
            if "=" in word:
                variable = word.partition("=")[0]
                if not re.search(rf"\$\({variable}\)", makefile):
                    problems.append(f"make variable {variable} is used by no rule")
            elif not word.startswith("-") and word not in targets:
                problems.append(f"no make target {word!r}")
    elif program == ".venv/bin/python":
        if not (ROOT / argv[1]).is_file():
            problems.append(f"no script {argv[1]}")
    elif program == "export":
        for assignment in argv[1:]:
            name = assignment.partition("=")[0]
            if "=" not in assignment or not known_variable(name):
                problems.append(f"export {name}: read by nothing")
    elif program == "curl":
        for word in argv[1:]:
            for base in (DOCS_BASE, LAN_BASE):
                if word.startswith(base):
                    try:
                        resolve(urlsplit(word).path)
                    except Resolver404:
                        problems.append(f"{word}: no such endpoint")
    elif program == "docker" and argv[1:2] != ["compose"]:
        problems.append("use `docker compose`")
    return problems


# --- the checks -------------------------------------------------------------------------------------------------------


def test_readme_starts_with_the_two_commands_and_stays_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines; move reference material to docs/"
    assert lines[0].startswith("# ") and lines[1] == "", lines[:2]
    first = read_blocks(README)[0]
    assert first.line == 3 and first.language == "sh", "README.md must open with the commands, right after the title"
    assert [command.argv for command in first.commands] == [["make", "run"], ["make", "test"]]


def test_every_block_names_its_language():
    unnamed = [block.where() for block in all_blocks() if not block.language]
    assert unnamed == []


def test_shell_blocks_are_valid_shell():
    for block in all_blocks():
        if block.language == "sh":
            checked = subprocess.run(["bash", "-n"], input=block.source, capture_output=True, text=True)
            assert checked.returncode == 0, f"{block.where()}: {checked.stderr}"


def test_every_documented_command_works_as_written():
    problems = [
        f"{block.where(command.line)}: {problem}"
        for block, command in sh_commands()
        for argv in command.simple
        for problem in command_problems(argv)
    ]
    assert problems == []


def test_the_command_checks_catch_mistakes():
    # The checks above are only as good as their ability to fail.
    assert command_problems(["make", "no-such-target"]) == ["no make target 'no-such-target'"]
    assert "--no-such-flag" in manage_parser_problem(["create_agent_client", "--name", "A", "--no-such-flag"])
    assert "required" in manage_parser_problem(["create_approver", "alice"])
    assert manage_parser_problem(["no_such_command"]) == "no manage.py command 'no_such_command'"
    assert command_problems(["python", "manage.py", "check"])
    assert command_problems(["NO_SUCH_SETTING=1", ".venv/bin/python", "manage.py", "check"])
    assert command_problems(["curl", f"{DOCS_BASE}/oauth/no-such-endpoint/"])
    assert command_problems(["rm", "-rf", "var"])
    assert manage_parser_problem(["createsuperuser", "--noinput", "--username", "admin", "--email", "a@b.c"]) == ""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        name = slug(heading)
        number = 0
        while (f"{name}-{number}" if number else name) in found:
            number += 1
        found.add(f"{name}-{number}" if number else name)
    return found


def test_every_relative_link_leads_somewhere():
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # code blocks
        text = re.sub(r"`[^`\n]*`", "", text)  # inline code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists():
                broken.append(f"{page_name(page)}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{page_name(page)}: {target} (no such heading)")
    assert broken == []


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    unlinked = [page.name for page in PAGES[1:] if f"(docs/{page.name})" not in text]
    assert unlinked == []


def variable_rows(page: Path) -> dict[str, str]:
    """The rows of the page's tables headed "variable": each variable in a first column, with its row."""
    rows: dict[str, str] = {}
    in_table = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_table = False
        elif line.startswith("| variable |"):
            in_table = True
        elif in_table and not line.startswith("|---"):
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]):
                rows[name] = line
    return rows


def test_configuration_lists_every_variable_settings_read():
    rows = variable_rows(ROOT / "docs" / "configuration.md")
    names, secrets = settings_variables()
    assert sorted(names - rows.keys()) == [], "undocumented in docs/configuration.md"
    assert sorted(rows.keys() - names) == [], "docs/configuration.md documents variables nothing reads"
    missing_file = [name for name in secrets if "_FILE" not in rows[name]]
    assert missing_file == [], "these can come from NAME_FILE too: say so"


def test_every_run_marker_is_there():
    found = {block.run: page_name(block.page) for block in all_blocks() if block.run}
    assert found == RUN_BLOCKS


# --- running the marked blocks ----------------------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    values: dict[str, str]  # placeholder -> real value

    def substitute(self, text: str) -> str:
        text = text.replace(DOCS_BASE, self.base)
        for placeholder, value in self.values.items():
            text = re.sub(rf"\b{placeholder}\b", value, text)
        left = [name for name in PLACEHOLDERS if re.search(rf"\b{name}\b", text)]
        assert left == [], f"no value for {left} in {text}"
        return text

    def curl(self, command: Command) -> dict[str, Any]:
        assert command.argv[0] == "curl", command.text
        done = subprocess.run(
            ["bash", "-c", self.substitute(command.text)], capture_output=True, text=True, timeout=30, check=True
        )
        return json.loads(done.stdout)


def documented_answer(command: Command, base: str) -> tuple[dict[str, Any], bool]:
    """The sample under a command, as JSON, and whether it is partial (ends with `, …}`)."""
    assert command.sample, f"no sample answer under {command.text}"
    text = " ".join(command.sample).replace(DOCS_BASE, base)
    partial = bool(re.search(r",\s*…\}$", text))
    return json.loads(re.sub(r",\s*…\}$", "}", text)), partial


def assert_shaped_like_sample(answer: dict[str, Any], command: Command, base: str) -> None:
    documented, partial = documented_answer(command, base)
    if partial:
        assert documented.keys() <= answer.keys(), (answer, command.sample)
    else:
        assert documented.keys() == answer.keys(), (answer, command.sample)
    for key, value in documented.items():
        if isinstance(value, bool) or value is None or isinstance(value, list | dict):
            assert answer[key] == value, (key, answer)
        elif isinstance(value, int | float):  # times and ids differ from run to run
            assert isinstance(answer[key], int | float) and not isinstance(answer[key], bool), (key, answer)
        elif "…" not in value:
            assert answer[key] == value, (key, answer)


def run_manage(command: Command, monkeypatch: pytest.MonkeyPatch) -> str:
    environment, argv = split_environment(command.argv)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert argv[:2] == [".venv/bin/python", "manage.py"], command.text
    output = StringIO()
    call_command(*argv[2:], stdout=output)
    return output.getvalue()


@pytest.fixture
def server(live_server: Any, settings: Any) -> Server:
    """The live server with the demo users, made by bootstrap_demo as `make run` makes them."""
    if shutil.which("curl") is None:
        message = "curl is not installed (apt-get install -y curl)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; required in CI", pytrace=False)
        pytest.skip(message)
    settings.PUBLIC_URL = live_server.url
    output = StringIO()
    call_command("bootstrap_demo", "--base-url", DOCS_BASE, stdout=output)
    printed = output.getvalue()
    (secret,) = re.findall(r"client_secret: (\S+)", printed)
    server = Server(live_server.url, {"SECRET": secret})
    # bootstrap_demo prints README's "Try it" commands with the real secret in them.
    printed_curls = [split_simple_commands(text)[0] for text in printed_curl_commands(printed)]
    readme_curls = [
        split_simple_commands(re.sub(r"\bSECRET\b", secret, command.text))[0]
        for command in run_block("try-it").commands
    ]
    assert printed_curls == readme_curls
    return server


def printed_curl_commands(printed: str) -> list[str]:
    commands: list[str] = []
    current: list[str] = []
    for line in printed.splitlines():
        if current or line.startswith("curl "):
            current.append(line)
            if not line.endswith("\\"):
                commands.append("\n".join(current))
                current = []
    return commands


def approve_by_link(auth_req_id: str, binding_message: str) -> None:
    """What README says: open the printed link and tap Approve (the link decides that one request only)."""
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    (prompt,) = [prompt for prompt in locmem.outbox if prompt.approval_request_id == str(approval_request.pk)]
    browser = Client()
    page = browser.get(urlsplit(prompt.link).path, follow=True)
    assert page.status_code == 200
    assert binding_message in page.content.decode()
    decided = browser.post(page.redirect_chain[-1][0] + "decide/", {"decision": "approve"})
    assert decided.status_code == 302
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.APPROVED


def ask_approve_poll(server: Server, block: Block, binding_message: str) -> dict[str, Any]:
    """A block of two commands, ask and poll: ask, approve by the link, poll; the token response."""
    ask, poll = block.commands
    ack = server.curl(ask)
    assert_shaped_like_sample(ack, ask, server.base)
    server.values["AUTH_REQ_ID"] = ack["auth_req_id"]
    approve_by_link(ack["auth_req_id"], binding_message)
    tokens = server.curl(poll)
    assert_shaped_like_sample(tokens, poll, server.base)
    return tokens


@pytest.mark.django_db(transaction=True)
def test_try_it(server: Server):
    ask, poll = run_block("try-it").commands

    ack = server.curl(ask)
    assert_shaped_like_sample(ack, ask, server.base)
    assert (ack["expires_in"], ack["interval"]) == (300, 5)
    server.values["AUTH_REQ_ID"] = ack["auth_req_id"]
    # "Until the person decides, step 2 answers authorization_pending; asking sooner than interval answers slow_down"
    assert server.curl(poll)["error"] == "authorization_pending"
    assert server.curl(poll)["error"] == "slow_down"

    approve_by_link(ack["auth_req_id"], "Order 4711")
    tokens = server.curl(poll)
    assert_shaped_like_sample(tokens, poll, server.base)
    assert (tokens["expires_in"], tokens["scope"]) == (600, "openid profile")
    # "The tokens are issued once: asking again answers invalid_grant."
    assert server.curl(poll)["error"] == "invalid_grant"


@pytest.mark.django_db(transaction=True)
def test_userinfo_and_introspection(server: Server):
    tokens = ask_approve_poll(server, run_block("try-it"), "Order 4711")
    server.values["ACCESS_TOKEN"] = tokens["access_token"]
    userinfo, introspect = run_block("tokens").commands
    assert_shaped_like_sample(server.curl(userinfo), userinfo, server.base)
    assert_shaped_like_sample(server.curl(introspect), introspect, server.base)


@pytest.mark.django_db(transaction=True)
def test_payment_approval_and_token_exchange(server: Server):
    install_example_types()
    tokens = ask_approve_poll(server, run_block("rar"), "Pay 420 EUR")
    server.values["ACCESS_TOKEN"] = tokens["access_token"]
    (exchange,) = run_block("token-exchange").commands
    exchanged = server.curl(exchange)
    assert_shaped_like_sample(exchanged, exchange, server.base)
    assert exchanged["expires_in"] <= tokens["expires_in"]


@pytest.mark.django_db(transaction=True)
def test_registration(server: Server):
    output = StringIO()
    call_command("create_registration_token", stdout=output)
    minted = json.loads(output.getvalue())
    server.values["INITIAL_TOKEN"] = minted["initial_access_token"]
    (register,) = run_block("register").commands
    assert_shaped_like_sample(server.curl(register), register, server.base)


@pytest.mark.django_db
def test_first_admin(monkeypatch: pytest.MonkeyPatch):
    (create,) = run_block("admin").commands
    run_manage(create, monkeypatch)
    environment, _argv = split_environment(create.argv)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.email == "admin@example.com"
    assert admin.check_password(environment["DJANGO_SUPERUSER_PASSWORD"])


@pytest.mark.django_db
def test_administration_from_scripts(monkeypatch: pytest.MonkeyPatch, settings: Any):
    settings.PUBLIC_URL = DOCS_BASE  # make run's, which the sample shows
    commands = run_block("scripts").commands
    assert [command.argv[2] for command in commands] == [
        "create_agent_client",
        "create_approver",
        "create_registration_token",
    ]
    for command in commands:
        assert_shaped_like_sample(json.loads(run_manage(command, monkeypatch)), command, DOCS_BASE)
