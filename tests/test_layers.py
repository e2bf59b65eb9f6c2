import subprocess
import sys

from tests.support import ROOT


def test_core_never_imports_streamlit():
    code = "import sys, core, core.cli, core.notify; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
