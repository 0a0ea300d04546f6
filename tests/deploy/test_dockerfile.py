"""The Dockerfile, checked without a Docker engine.

First its required properties, read from the file: multi-stage, small final
base, non-root user, HEALTHCHECK through the gRPC health service. Then a
rehearsal of what it builds: a virtualenv with only requirements/runtime.lock,
the copied sources, the final stage's ENV and ENTRYPOINT; that server must
start against PostgreSQL, pass the HEALTHCHECK command and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"not exec form: {args}"
    return [str(word) for word in parsed]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def test_multi_stage_with_a_slim_final_image(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert final.base == "python:3.11-slim"
    # The final stage installs nothing: it copies the builder's results.
    assert not any("pip install" in run for run in final.all("RUN"))
    copied_from_builder = [c for c in final.all("COPY") if c.startswith("--from=builder")]
    assert any("/opt/venv" in c for c in copied_from_builder)
    # Only the runtime lock goes in: no test or lint tooling in the image.
    assert any("requirements/runtime.lock" in c for c in builder.all("COPY"))
    runtime_lock = (ROOT / "requirements/runtime.lock").read_text()
    assert "pytest" not in runtime_lock and "pgserver" not in runtime_lock


def test_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    user = stages[-1].last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "numeric, so Kubernetes' runAsNonRoot can check it"
    assert int(uid) != 0


def test_healthcheck_asks_the_grpc_health_service(stages: list[Stage]) -> None:
    final = stages[-1]
    healthcheck = final.last("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--interval" in options and "--timeout" in options
    # Liveness, never the database: a container is not replaced for an outage.
    assert exec_form(command.strip()) == [
        "python",
        "-m",
        "server",
        "healthcheck",
        "--service",
        "liveness",
    ]
    assert exec_form(final.last("ENTRYPOINT")) == ["python", "-m", "server"]
    listen = env_of(final)["CONCERT_LISTEN"]
    assert listen.startswith("0.0.0.0:")
    assert listen.rpartition(":")[2] in final.last("EXPOSE").split()


def test_copied_sources_exist_and_pass_the_dockerignore(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent_to_the_builder(path: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, glob) or path.startswith(glob + "/"):
                included = negated
        return included

    for stage in stages:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert sent_to_the_builder(source.rstrip("/")), source
    assert not sent_to_the_builder(".venv")
    assert not sent_to_the_builder(".data")
    assert not sent_to_the_builder(".git")


@pytest.mark.slow
def test_rehearsal_of_the_image_serves_and_stops_cleanly(
    stages: list[Stage], tmp_path: Path, create_database: object
) -> None:
    builder, final = stages[0], stages[-1]
    venv, app_dir = tmp_path / "opt-venv", tmp_path / "app"

    # builder: the venv from the lock the Dockerfile names, then the sources.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    lock = next(c.split()[0] for c in builder.all("COPY") if c.endswith(".lock"))
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--quiet", "--no-deps", "-r", str(ROOT / lock)],
        check=True,
        timeout=540,
    )
    for args in builder.all("COPY"):
        source, target = args.split()
        if target.endswith("/") and (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source, app_dir / target, ignore=shutil.ignore_patterns("__pycache__")
            )

    # final: its ENV with the image's paths mapped into tmp_path.
    def local(value: str) -> str:
        value = value.replace("$PATH", os.environ["PATH"])
        return value.replace("/opt/venv", str(venv)).replace("/app", str(app_dir))

    port = free_port()
    env = {
        **{key: local(value) for key, value in env_of(final).items()},
        "CONCERT_LISTEN": f"127.0.0.1:{port}",
        "CONCERT_DATABASE_URL": create_database(),  # type: ignore[operator]
        "CONCERT_SHUTDOWN_GRACE_SECONDS": "2",
    }
    entrypoint = exec_form(final.last("ENTRYPOINT")) + exec_form(final.last("CMD"))
    healthcheck = exec_form(final.last("HEALTHCHECK").partition("CMD")[2].strip())
    assert entrypoint[0] == healthcheck[0] == "python"
    python = str(venv / "bin/python")

    server = subprocess.Popen(
        [python, *entrypoint[1:]], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(
                [python, *healthcheck[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, check.stderr
            time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
