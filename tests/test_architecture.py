"""The one direction (docs/architecture.md): authz may use approvals, approvals never knows authz.

import-linter checks imports in `make lint`; this test also catches what imports don't show: an import path in a
string (import_string, settings defaults, Celery task names), an app-registry lookup, a reverse ORM relation into
authz's models (`client.ciba`, `client__ciba`), and function-level imports that hide an import circle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Anything in approvals (code, comments, templates, migrations) that names authz or reaches into its models.
FORBIDDEN = [
    (re.compile(r"\bauthz\b"), "names authz"),
    (re.compile(r"\bget_model\s*\("), "looks a model up in the app registry"),
    (re.compile(r"\.ciba\b|__ciba\b|[\"']ciba[\"']"), "follows a reverse relation into authz's CibaClient"),
    (
        re.compile(r"\b(CibaClient|TokenDetails|AuthorizationDetailType|Notification(Attempt)?)\b"),
        "names an authz model",
    ),
]


def approvals_files() -> Iterator[Path]:
    for folder in ("approvals", "templates/approvals"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".html", ".txt", ".js", ".json"):
                yield path


# Model names are checked in code and templates, not in migrations (the history of tables that moved to authz) or
# in scripts (the browser's own Notification API).
MODEL_NAMES = FORBIDDEN[-1][0]


def violations(text: str, *, model_names: bool = True) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            if pattern.search(line) and (model_names or pattern is not MODEL_NAMES):
                found.append(f"{number}: {why}: {line.strip()}")
    return found


def test_the_scan_finds_what_it_looks_for():
    planted = {
        "from authz.ciba import poll": "names authz",
        'import_string("authz.ciba.notify.issue_push_tokens")': "names authz",
        'apps.get_model("x", "Y")': "looks a model up in the app registry",
        "website = approval_request.client.ciba.website": "reverse relation",
        'select_related("client__ciba")': "reverse relation",
        "Notification.objects.filter(request=r)": "names an authz model",
    }
    for line, why in planted.items():
        assert any(why in v for v in violations(line)), line
    assert violations("the agent's profile comes from approvals.agents") == []


def test_approvals_never_names_or_reaches_into_authz():
    files = list(approvals_files())
    assert len(files) > 30  # the walk really covers the app
    report = {
        str(path.relative_to(ROOT)): found
        for path in files
        if (found := violations(path.read_text(encoding="utf-8"), model_names=_checks_model_names(path)))
    }
    assert report == {}


def _checks_model_names(path: Path) -> bool:
    return "migrations" not in path.parts and path.suffix != ".js"


def module_imports(path: Path, package_root: Path) -> tuple[str, set[str], set[str]]:
    """(module name, modules imported at module level, modules imported inside functions)."""
    module = ".".join(path.relative_to(package_root).with_suffix("").parts).removesuffix(".__init__")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    nested: set[str] = set()

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            now_inside = inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            if names and not _type_checking_block(node):
                (nested if now_inside else top).update(n for n in names if n.split(".")[0] in ("authz", "approvals"))
            visit(child, now_inside)

    visit(tree, False)
    return module, top, nested


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    everything: dict[str, tuple[set[str], set[str]]] = {}
    for app in ("authz", "approvals"):
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            module, top, nested = module_imports(path, ROOT)
            everything[module] = (top, nested)
    known = set(everything)
    for module, (top, nested) in everything.items():
        # "from approvals import services" imports approvals.services: keep the names that are modules.
        graph[module] = {name for name in top | nested if name in known and name != module}
    return graph


def test_no_import_circles_hidden_inside_functions():
    """Imports inside functions are how the old circles were broken; with them counted, there is no circle."""
    graph = import_graph()
    assert "authz.ciba.poll" in graph and "approvals.services" in graph
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start and len(path) > 1:
                    cycles.append(" -> ".join([*path, nxt]))
                elif nxt not in path and nxt > start:  # each cycle once, from its smallest module
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_approvals_imports_nothing_from_authz_even_inside_functions():
    graph = import_graph()
    reaching = {m: sorted(i for i in imports if i.startswith("authz")) for m, imports in graph.items()}
    assert {m: found for m, found in reaching.items() if m.startswith("approvals") and found} == {}


def test_the_import_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
