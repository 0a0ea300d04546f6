"""Every proto file sets the options other languages' generators need (scripts/proto_options.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import proto_options
import pytest
from google.protobuf import descriptor_pb2

from tests.contract.conftest import ROOT, build, edit


def test_every_proto_file_sets_every_option(tmp_path: Path) -> None:
    files = build(ROOT / "protos", tmp_path / "own.binpb").file
    assert {file.name for file in files} >= {
        "concert/v1/account.proto",
        "concert/v1/payment_callback.proto",
    }
    assert proto_options.check(list(files)) == []
    callback = next(f for f in files if f.name == "concert/v1/payment_callback.proto")
    assert callback.options.go_package == (
        "github.com/concert-tickets/reservation/gen/go/concert/v1;concertv1"
    )
    assert callback.options.java_outer_classname == "PaymentCallbackProto"


def test_a_missing_option_fails_the_check(protos: Path, tmp_path: Path) -> None:
    edit(
        protos / "concert/v1/queue.proto",
        f'option go_package = "{proto_options.GO_MODULE}/concert/v1;concertv1";\n',
        "",
    )
    edit(protos / "concert/v1/wallet.proto", "option java_multiple_files = true;\n", "")
    image = tmp_path / "own.binpb"
    build(protos, image)
    checked = subprocess.run(
        [sys.executable, str(ROOT / "scripts/proto_options.py"), str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 1
    assert "concert/v1/queue.proto: option go_package is missing" in checked.stderr
    assert "concert/v1/wallet.proto: option java_multiple_files is missing" in checked.stderr
    assert "2 problem(s)" in checked.stderr


def test_a_value_that_disagrees_with_the_package_or_file_fails(
    protos: Path, tmp_path: Path
) -> None:
    wallet = protos / "concert/v1/wallet.proto"
    edit(wallet, '"WalletProto"', '"AccountProto"')
    edit(
        wallet, 'option csharp_namespace = "Concert.V1";', 'option csharp_namespace = "Konzert.V1";'
    )
    edit(
        wallet,
        'option ruby_package = "Concert::V1";',
        'option ruby_package = "Concert::V1::Wallet";',
    )
    edit(
        wallet,
        'option objc_class_prefix = "CXX";',
        'option objc_class_prefix = "CXX";\noption swift_prefix = "CX";',
    )
    found = proto_options.check(list(build(protos, tmp_path / "own.binpb").file))
    assert all(problem.startswith("concert/v1/wallet.proto: ") for problem in found), found
    text = "\n".join(found)
    assert "java_outer_classname is 'AccountProto', want 'WalletProto'" in text
    assert "csharp_namespace 'Konzert.V1' does not name package concert.v1" in text
    assert "ruby_package is 'Concert::V1::Wallet', want 'Concert::V1'" in text
    assert "swift_prefix should be unset" in text


def _file(name: str, package: str, **options: object) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package)
    for option, value in options.items():
        setattr(file.options, option, value)
    return file


def test_another_package_follows_the_same_pattern_with_its_own_casing() -> None:
    complete = {
        "csharp_namespace": "PaymentModule.V1",
        "go_package": f"{proto_options.GO_MODULE}/paymentmodule/v1;paymentmodulev1",
        "java_package": "com.paymentmodule.v1",
        "java_multiple_files": True,
        "java_outer_classname": "ChargeCardProto",
        "objc_class_prefix": "PXX",
        "php_namespace": "PaymentModule\\V1",
        "ruby_package": "PaymentModule::V1",
    }
    file = _file("paymentmodule/v1/charge_card.proto", "paymentmodule.v1", **complete)
    assert proto_options.problems(file) == []
    assert proto_options.expected_options(file) == complete

    # PHP must case the package as csharp_namespace does.
    file.options.php_namespace = "Paymentmodule\\V1"
    assert proto_options.problems(file) == [
        "paymentmodule/v1/charge_card.proto: option php_namespace is 'Paymentmodule\\\\V1', "
        "want 'PaymentModule\\\\V1'"
    ]


@pytest.mark.parametrize(
    "option", sorted(proto_options.expected_options(_file("a/v1/b.proto", "a.v1")))
)
def test_each_option_is_required(option: str) -> None:
    file = _file(
        "a/v1/b.proto", "a.v1", **proto_options.expected_options(_file("a/v1/b.proto", "a.v1"))
    )
    assert proto_options.problems(file) == []
    file.options.ClearField(option)
    (problem,) = proto_options.problems(file)
    assert problem.startswith(f"a/v1/b.proto: option {option} is missing")


def test_a_file_without_a_package_is_refused() -> None:
    assert proto_options.problems(_file("loose.proto", "")) == ["loose.proto: declares no package"]
