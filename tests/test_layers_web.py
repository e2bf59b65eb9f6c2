"""The HTTP layer (web/) stands on core only: it never imports the Streamlit helpers in ui/."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support import ROOT


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_file_in_web_imports_ui():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] == "ui")
                 for p in (ROOT / "web").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_web_loads_no_ui_module():
    code = "import sys, web; print(sorted(m for m in sys.modules if m == 'ui' or m.startswith('ui.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
