"""Another distribution's top-level ``tests`` package (plottable, a dependency of scib-metrics, installs one into
site-packages) cannot shadow this repository's tests: nothing imports them as a package named ``tests``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COLLECT = textwrap.dedent(
    """
    import sys

    import pytest

    sys.path.insert(0, sys.argv[1])  # first on the path, as site-packages is for a script outside the repository
    import tests  # the foreign package, imported first as a plugin or a dependency might

    assert tests.FOREIGN
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"])
    ours = [m for m, mod in list(sys.modules.items()) if m.split(".")[0] == "tests" and mod is not tests]
    print("modules named tests.*:", ours)
    sys.exit(int(code) or bool(ours))
    """
)


def test_a_foreign_tests_package_does_not_shadow_ours(tmp_path):
    foreign = tmp_path / "tests"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("FOREIGN = True\n")
    (foreign / "conftest.py").write_text("raise ImportError('the foreign tests package was imported')\n")
    result = subprocess.run(
        [sys.executable, "-c", COLLECT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_layout.py::test_a_foreign_tests_package_does_not_shadow_ours" in result.stdout
    assert "modules named tests.*: []" in result.stdout
