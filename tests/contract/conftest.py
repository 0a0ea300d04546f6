"""tests/contract: the protos as a contract, checked with buf on copies of protos/.

No test here uses PostgreSQL (as in tests/unit, asking for it fails at once).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).with_name("buf")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    pytest.fail("tests/contract must not use PostgreSQL", pytrace=False)


@pytest.fixture
def protos(tmp_path: Path) -> Path:
    """A copy of protos/ to change (with its buf.yaml and the released image)."""
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    """Replaces one exact piece of a .proto, failing if it is not there once."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path.name}"
    path.write_text(text.replace(old, new))


def build(protos: Path, out: Path) -> descriptor_pb2.FileDescriptorSet:
    """buf build of the module's own files, as scripts/lint does it."""
    subprocess.run(
        [str(BUF), "build", str(protos), "--exclude-imports", "-o", f"{out}#format=binpb"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
