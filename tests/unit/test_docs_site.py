"""The docs site builds with MkDocs in strict mode: a broken link or anchor, a page missing from the nav or
a nav entry without its page fails `make test`, as it fails `make docs`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    # NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2 is not about this site.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    warnings = [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not warnings, "`make docs` fails:\n" + "\n".join(warnings or [result.stderr])
    assert (tmp_path / "site" / "reference" / "healthpolicy" / "index.html").exists()
