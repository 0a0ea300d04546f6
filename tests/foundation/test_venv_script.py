"""scripts/lib/venv.sh: a failed install says so, names the command to rerun, and leaves no stamp.

The success path (a fresh clone's scripts/serve with Python 3.11 and the newest
Python) is checked by scripts/readme_walk.py, which CI runs every time.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, lock: str) -> Path:
    project = tmp_path / "project"
    (project / "scripts" / "lib").mkdir(parents=True)
    (project / "requirements").mkdir()
    shutil.copy(ROOT / "scripts" / "lib" / "venv.sh", project / "scripts" / "lib" / "venv.sh")
    (project / "scripts" / "serve").write_text(
        '#!/usr/bin/env bash\nset -euo pipefail\ncd "$(dirname "$0")/.."\n'
        "source scripts/lib/venv.sh\nensure_venv serve\necho served\n"
    )
    (project / "scripts" / "serve").chmod(0o755)
    (project / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    (project / "requirements" / "serve.lock").write_text(lock)
    return project


def _serve(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scripts/serve"], cwd=project, capture_output=True, text=True, timeout=300
    )


def test_a_failed_install_prints_the_error_and_the_command_and_leaves_no_stamp(
    tmp_path: Path,
) -> None:
    # A requirement pip cannot satisfy without the network: a wheel that is not there.
    project = _project(tmp_path, "./missing/not_there-1.0-py3-none-any.whl\n")
    first = _serve(project)
    assert first.returncode != 0
    assert "served" not in first.stdout
    assert "not_there-1.0-py3-none-any.whl" in first.stderr  # pip's own error
    last_line = first.stderr.strip().splitlines()[-1]
    assert "failed" in last_line and "rerun scripts/serve" in last_line
    assert not list((project / ".venv").glob(".installed-*"))

    # The next run tries the install again instead of serving half-installed.
    second = _serve(project)
    assert second.returncode != 0
    assert "installing requirements/serve.lock" in second.stderr
    assert not list((project / ".venv").glob(".installed-*"))
