"""The structural promises of the codebase, as tests. Each failure names the offenders.

- no function in core/ takes more than 5 positional parameters or 8 in all;
- no file in core/ is longer than 400 lines;
- core/ never imports Streamlit, web/ never imports ui/;
- core/ uses no private name of slack_sdk;
- nothing in the repository cites the spec kept outside it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT

CORE = ROOT / "core"
MAX_POSITIONAL, MAX_PARAMETERS = 5, 8
MAX_LINES = 400


def python_files(folder: Path) -> Iterator[Path]:
    yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def where(path: Path, node: ast.AST | None = None) -> str:
    rel = path.relative_to(ROOT)
    return f"{rel}:{node.lineno}" if node is not None else str(rel)


def imported_modules(path: Path, tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """Every module an ``import`` or ``from ... import`` in ``tree`` names, relative ones resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                yield node, module
            else:  # from . import ui: each name is a module
                for alias in node.names:
                    yield node, f"{module}.{alias.name}" if module else alias.name


def test_no_function_in_core_takes_too_many_parameters():
    offenders = []
    for path in python_files(CORE):
        for node in ast.walk(parsed(path)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            a = node.args
            positional = len(a.posonlyargs) + len(a.args)  # self and cls count
            total = positional + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
            if positional > MAX_POSITIONAL or total > MAX_PARAMETERS:
                name = getattr(node, "name", "<lambda>")
                offenders.append(f"{where(path, node)} {name}: {positional} positional, {total} in all")
    assert not offenders, (f"functions over {MAX_POSITIONAL} positional or {MAX_PARAMETERS} parameters "
                           "(pass one object, or make options keyword-only):\n" + "\n".join(offenders))


def test_no_file_in_core_is_longer_than_400_lines():
    offenders = []
    for path in python_files(CORE):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            offenders.append(f"{where(path)}: {n} lines")
    assert not offenders, f"files in core/ over {MAX_LINES} lines (split by responsibility):\n" + "\n".join(offenders)


def test_core_never_imports_streamlit():
    code = "import sys, core, core.cli, core.notify; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_file_in_core_imports_streamlit_even_inside_a_function():
    offenders = [f"{where(path, node)} imports {module}"
                 for path in python_files(CORE)
                 for node, module in imported_modules(path, parsed(path))
                 if module.split(".")[0] == "streamlit"]
    assert not offenders, "core/ must not import Streamlit:\n" + "\n".join(offenders)


def test_web_never_imports_ui():
    offenders = [f"{where(path, node)} imports {module}"
                 for path in python_files(ROOT / "web")
                 for node, module in imported_modules(path, parsed(path))
                 if module.split(".")[0] == "ui"]
    assert not offenders, "web/ (the HTTP trigger) must not import ui/ (Streamlit helpers):\n" + "\n".join(offenders)


# Names that exist only inside slack_sdk (overriding or setting them ties the core to its internals).
SLACK_PRIVATE = ("_upload_file", "_can_retry", "_calculate_", ".timeout =")


def test_core_uses_no_private_name_of_slack_sdk():
    offenders = []
    for path in python_files(CORE):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            offenders += [f"{where(path)}:{number}: {name!r} in {line.strip()!r}"
                          for name in SLACK_PRIVATE if name in line]
        for node, module in imported_modules(path, parsed(path)):
            if module.startswith("slack_sdk") and any(part.startswith("_") for part in module.split(".")):
                offenders.append(f"{where(path, node)} imports the private {module}")
    assert not offenders, "core/ uses slack_sdk internals (use its public API):\n" + "\n".join(offenders)


SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
OUTSIDE_SPEC = "SPEC" + ".md"  # spelled in two halves so that this file does not cite it


def test_nothing_in_the_repository_cites_the_outside_spec():
    offenders = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            path = Path(folder) / name
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):  # binary files (screenshots) cite nothing
                continue
            offenders += [f"{where(path)}:{number}: {line.strip()[:100]}"
                          for number, line in enumerate(text.splitlines(), start=1) if OUTSIDE_SPEC in line]
    assert not offenders, (f"{OUTSIDE_SPEC} is not in the repository; cite docs/design.md instead:\n"
                           + "\n".join(offenders))
