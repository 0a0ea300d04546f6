"""`scripts/contract breaking` (in scripts/lint) fails a breaking change, passes an additive one.

Each test changes a copy of protos/ and runs the script on it, against the
released image the copy carries (a copy of protos/released/contract.binpb).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tests.contract.conftest import ROOT, edit

RELEASED = ROOT / "protos/released/contract.binpb"


def contract(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts/contract"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return contract("breaking", str(protos))


def add_charge_time(protos: Path) -> None:
    edit(
        protos / "concert/v1/wallet.proto",
        "  int64 ledger_entry_id = 3;\n}",
        "  int64 ledger_entry_id = 3;\n  // When the charge was written.\n"
        "  google.protobuf.Timestamp charge_time = 4;\n}",
    )


def test_the_released_image_holds_the_concert_v1_contract() -> None:
    image = descriptor_pb2.FileDescriptorSet.FromString(RELEASED.read_bytes())
    names = {file.name for file in image.file}
    assert {"concert/v1/account.proto", "concert/v1/payment.proto"} <= names
    services = {s.name for f in image.file if f.package == "concert.v1" for s in f.service}
    assert {"AccountService", "PaymentService", "AdminService"} <= services


def test_the_protos_as_they_are_pass(protos: Path) -> None:
    checked = breaking(protos)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("what", "file", "old", "new", "rule"),
    [
        (
            "int32 -> int64",
            "concert.proto",
            "  int32 total_seat_count = 5;",
            "  int64 total_seat_count = 5;",
            'changed type from "int32" to "int64"',
        ),
        (
            "removed field",
            "wallet.proto",
            "  // The ledger entry the charge wrote (a number, increasing).\n"
            "  int64 ledger_entry_id = 3;\n",
            "",
            'Previously present field "3" with name "ledger_entry_id"',
        ),
        (
            "renamed RPC",
            "wallet.proto",
            "  rpc GetBalance(GetBalanceRequest)",
            "  rpc ReadBalance(GetBalanceRequest)",
            'Previously present RPC "GetBalance"',
        ),
        (
            "renumbered field",
            "wallet.proto",
            "  string request_id = 3;",
            "  string request_id = 4;",
            "request_id",
        ),
        (
            "changed go_package",
            "wallet.proto",
            "gen/go/concert/v1;concertv1",
            "gen/go/concert/v1;concert",
            'File option "go_package" changed',
        ),
    ],
)
def test_a_breaking_change_fails(
    protos: Path, what: str, file: str, old: str, new: str, rule: str
) -> None:
    edit(protos / "concert/v1" / file, old, new)
    checked = breaking(protos)
    assert checked.returncode != 0, f"{what} passed: {checked.stdout}"
    assert rule in checked.stdout + checked.stderr


def test_an_additive_change_passes(protos: Path) -> None:
    wallet = protos / "concert/v1/wallet.proto"
    add_charge_time(protos)
    edit(
        wallet,
        "  rpc GetBalance(GetBalanceRequest) returns (GetBalanceResponse);\n",
        "  rpc GetBalance(GetBalanceRequest) returns (GetBalanceResponse);\n\n"
        "  // ListCharges lists a wallet's charges.\n"
        "  rpc ListCharges(ListChargesRequest) returns (ListChargesResponse);\n",
    )
    wallet.write_text(
        wallet.read_text()
        + "\n// ListChargesRequest names a wallet.\nmessage ListChargesRequest {\n"
        "  // The wallet's owner.\n  string user_id = 1;\n}\n"
        "\n// ListChargesResponse is its charges.\nmessage ListChargesResponse {\n"
        "  // The charges, oldest first.\n  repeated ChargeResponse charges = 1;\n}\n"
    )
    checked = breaking(protos)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_new_package_version_beside_v1_passes(protos: Path) -> None:
    """The deliberate way to break: concert.v2 beside concert.v1 (docs/deploy.md)."""
    v2 = protos / "concert/v2"
    v2.mkdir()
    wallet = (protos / "concert/v1/wallet.proto").read_text()
    wallet = wallet.replace("package concert.v1;", "package concert.v2;").replace(
        "concert/v1;concertv1", "concert/v2;concertv2"
    )
    wallet = wallet.replace('"com.concert.v1"', '"com.concert.v2"').replace("V1", "V2")
    # v2 changes what v1 could not: the ledger entry id becomes a string.
    wallet = wallet.replace("  int64 ledger_entry_id = 3;", "  string ledger_entry_id = 3;")
    (v2 / "wallet.proto").write_text(wallet)
    checked = breaking(protos)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_release_makes_additions_promises(protos: Path) -> None:
    add_charge_time(protos)
    released = contract("release", str(protos))
    assert released.returncode == 0, released.stderr
    assert protos.joinpath("released/contract.binpb").read_bytes() != RELEASED.read_bytes()
    edit(
        protos / "concert/v1/wallet.proto",
        "  google.protobuf.Timestamp charge_time = 4;\n",
        "",
    )
    checked = breaking(protos)
    assert checked.returncode != 0
    assert 'Previously present field "4" with name "charge_time"' in checked.stdout


def test_a_release_refuses_a_breaking_contract_unless_told(protos: Path) -> None:
    edit(protos / "concert/v1/concert.proto", "  int32 total_seat_count = 5;", "")
    refused = contract("release", str(protos))
    assert refused.returncode == 1
    assert "breaks the released contract; not recorded" in refused.stderr
    assert protos.joinpath("released/contract.binpb").read_bytes() == RELEASED.read_bytes()

    accepted = contract("release", "--accept-breaking", str(protos))
    assert accepted.returncode == 0, accepted.stderr
    assert breaking(protos).returncode == 0
