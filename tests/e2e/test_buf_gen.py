"""buf.gen.yaml generates generated/'s Python code exactly as scripts/gen does.

scripts/gen (grpcio-tools' protoc) stays the one that writes generated/, and its
--check guards drift in lint; this test keeps the second way to the same files
honest: buf.gen.yaml's Python plugin, run into a scratch folder, writes the
same bytes (less the two empty package markers scripts/gen adds).
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.toolchains import REPOSITORY, buf_gen_plugins, generate, language_of

PACKAGE_MARKERS = {"__init__.py"}
# scripts/gen also writes the protoset reflection serves: not a plugin's output.
NOT_FROM_PLUGINS = {".protoset"}


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.name not in PACKAGE_MARKERS
        and path.suffix not in NOT_FROM_PLUGINS
    }


def test_buf_gen_yaml_writes_generated_python_as_scripts_gen_does(tmp_path: Path) -> None:
    generate("python", tmp_path)

    written = _files(tmp_path / "generated")
    checked_in = _files(REPOSITORY / "generated")
    assert sorted(written) == sorted(checked_in)
    differing = [name for name in written if written[name] != checked_in[name]]
    assert differing == [], f"buf.gen.yaml's Python differs from scripts/gen's: {differing}"


def test_buf_gen_yaml_writes_only_generated_and_gen() -> None:
    # generated/ is checked in; every other language goes under gen/, which git ignores.
    languages = {language_of(plugin) for plugin in buf_gen_plugins()}
    assert languages == {"python", "ts", "go"}
    assert "gen/" in (REPOSITORY / ".gitignore").read_text().splitlines()


def test_every_proto_has_a_go_import_path() -> None:
    # protoc-gen-go refuses a file with neither a go_package option nor an M
    # option naming it (error_reason.proto once had neither, and the Go client
    # stopped building): say which file, without needing the Go toolchain.
    protos = REPOSITORY / "protos"
    go_options = {
        opt
        for plugin in buf_gen_plugins()
        if language_of(plugin) == "go"
        for opt in plugin.get("opt", [])
    }
    mapped = {opt[1:].split("=", 1)[0] for opt in go_options if opt.startswith("M")}
    missing = [
        name
        for path in sorted(protos.rglob("*.proto"))
        if (name := path.relative_to(protos).as_posix()) not in mapped
        and "option go_package" not in path.read_text()
    ]
    assert missing == [], f"buf.gen.yaml's Go plugins have no M option for {missing}"
