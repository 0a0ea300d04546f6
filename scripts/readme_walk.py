"""A newcomer's first minutes, checked: fresh copy, `scripts/serve`, the README's grpcurl walk.

    python3 scripts/readme_walk.py [--python python3.13]

Standard library only: it runs before any virtualenv exists. It copies the tree
(tracked and untracked files, nothing git ignores: no .venv, no .data) into a
temp folder, and there:

1. runs `scripts/serve` on a free port with the embedded PostgreSQL (so the
   install from the lock files is part of what is checked) and waits for health
   SERVING;
2. runs the README's grpcurl walk, extracted from README.md, exactly as printed,
   and checks that it pays for the seat and that the paid token is used up;
3. kills the embedded PostgreSQL with SIGKILL (a stale postmaster.pid stays
   behind), stops the server with SIGTERM (exit 0), starts `scripts/serve` again
   and checks that the cluster recovered by itself with the payment intact;
4. stops the server with SIGTERM and checks exit code 0.

Exit code 0 when all of it holds; otherwise 1, with the server's log.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WALK_HEADING = "## A walk through the whole flow with grpcurl"
FIRST_START_SECONDS = 900  # creating the virtualenv from PyPI included
START_SECONDS = 120
STOP_SECONDS = 60


class WalkFailed(Exception):
    pass


def readme_walk(readme: str) -> str:
    """The first sh block under the walk's heading, as printed."""
    section = readme.split(WALK_HEADING, 1)
    if len(section) != 2:
        raise WalkFailed(f"README.md has no section {WALK_HEADING!r}")
    block = re.search(r"```sh\n(.*?)```", section[1], re.DOTALL)
    if block is None:
        raise WalkFailed("the walk's section has no ```sh block")
    return block.group(1)


def copy_tree(destination: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if not source.exists():  # deleted in the working tree
            continue
        target = destination / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """`scripts/serve` in the copy, its output in a log file."""

    def __init__(self, tree: Path, env: dict[str, str], log: Path) -> None:
        self.tree, self.env, self.log = tree, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["scripts/serve"],
                cwd=self.tree,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def grpcurl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.tree / ".venv/bin/grpcurl"), "-plaintext", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def wait_serving(self, seconds: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WalkFailed(f"scripts/serve exited with {self.process.returncode}")
            if (self.tree / ".venv/bin/grpcurl").exists():
                health = self.grpcurl(self.env["CONCERT_LISTEN"], "grpc.health.v1.Health/Check")
                if '"SERVING"' in health.stdout:
                    return
            time.sleep(0.5)
        raise WalkFailed(f"health not SERVING within {seconds:.0f} s")

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise WalkFailed(
                f"the server did not stop within {STOP_SECONDS} s of SIGTERM"
            ) from None
        if code != 0:
            raise WalkFailed(f"the server exited with {code} after SIGTERM, not 0")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def run_walk(server: Server) -> str:
    walk = readme_walk((server.tree / "README.md").read_text())
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", walk],
        cwd=server.tree,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    # The walk ends with the call the paid token may no longer make: it fails,
    # so bash -e stops there, and only there.
    if "TOKEN_COMPLETED" not in done.stderr:
        raise WalkFailed(
            f"the walk did not end on TOKEN_COMPLETED (exit {done.returncode}):\n{output}"
        )
    paid = re.search(r'"payment": \{.*?"reservation_id": "([^"]+)"', done.stdout, re.DOTALL)
    if paid is None:
        raise WalkFailed(f"the walk printed no payment:\n{output}")
    return paid.group(1)


def kill_embedded_postgres(data_dir: Path) -> None:
    """SIGKILL the postmaster and its backends; postmaster.pid stays behind."""
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True
    ).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not pid_file.exists():
        raise WalkFailed("postmaster.pid vanished: the kill was not unclean")


# Run by the copy's virtualenv: joins the running embedded cluster and reads
# what the walk paid for straight from the database.
_READ_PAYMENT = """
import sys
from pathlib import Path
import psycopg
from server.db.embedded import open_cluster
cluster = open_cluster(Path(".data") / "pgdata")
with psycopg.connect(cluster.url) as conn:
    row = conn.execute(
        "SELECT r.state, p.state, s.sold FROM reservations r"
        " JOIN payments p ON p.reservation_id = r.id"
        " JOIN seats s ON s.reservation_id = r.id WHERE r.id = %s",
        (sys.argv[1],),
    ).fetchone()
print(row)
"""


def recovered(data_dir: Path) -> None:
    """PostgreSQL's own log says the restart ran crash recovery (not a clean start)."""
    log = (data_dir / "pgdata" / "log").read_text(errors="replace")
    if "automatic recovery in progress" not in log:
        raise WalkFailed("PostgreSQL's log shows no crash recovery after the SIGKILL")


def payment_survived(server: Server, reservation_id: str) -> None:
    """The payment made before the crash is there: reservation paid, payment
    completed, seat sold; and every invariant of `python -m server check` holds."""
    python = str(server.tree / ".venv/bin/python")
    read = subprocess.run(
        [python, "-c", _READ_PAYMENT, reservation_id],
        cwd=server.tree,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if read.stdout.strip() != "('paid', 'completed', True)":
        raise WalkFailed(f"the payment did not survive the crash: {read.stdout}{read.stderr}")
    check = subprocess.run(
        [python, "-m", "server", "check"],
        cwd=server.tree,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.returncode != 0:
        raise WalkFailed(f"`python -m server check` failed after the crash:\n{check.stdout}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="the interpreter scripts/serve builds .venv with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="concert-fresh-") as temp:
        tree = Path(temp) / "concert"
        copy_tree(tree)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CONCERT_") and key not in {"VIRTUAL_ENV", "PYTHONPATH"}
        }
        # No admin key: scripts/serve then uses the local one the walk's operator calls use.
        env["CONCERT_LISTEN"] = f"127.0.0.1:{free_port()}"
        if args.python:
            env["PYTHON"] = args.python
        log = Path(temp) / "serve.log"
        server = Server(tree, env, log)
        label = args.python or "the default python"
        try:
            began = time.monotonic()
            server.start()
            server.wait_serving(FIRST_START_SECONDS)
            print(
                f"readme walk ({label}): first scripts/serve SERVING after "
                f"{time.monotonic() - began:.0f} s, install included"
            )
            reservation_id = run_walk(server)
            print(f"readme walk ({label}): paid {reservation_id}, token used up")
            kill_embedded_postgres(tree / ".data")
            server.stop()
            began = time.monotonic()
            server.start()
            server.wait_serving(START_SECONDS)
            print(
                f"readme walk ({label}): after SIGKILL of PostgreSQL, scripts/serve SERVING "
                f"again in {time.monotonic() - began:.1f} s"
            )
            recovered(tree / ".data")
            payment_survived(server, reservation_id)
            server.stop()
        except (WalkFailed, subprocess.TimeoutExpired) as failure:
            server.kill()
            print(f"readme walk ({label}) FAILED: {failure}", file=sys.stderr)
            print(
                f"--- scripts/serve's output ---\n{log.read_text(errors='replace')[-20000:]}",
                file=sys.stderr,
            )
            return 1
        print(f"readme walk ({label}): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
