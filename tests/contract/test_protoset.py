"""The protoset scripts/gen builds: the same contract as the generated code, plus comments."""

from __future__ import annotations

import importlib

import protoset
from google.protobuf import descriptor_pb2

from server.reflection import read_protoset
from tests.contract.conftest import ROOT
from tests.e2e.grpcurl import grpcurl_output

PROTOSET = ROOT / "generated/concert/v1/concert.v1.protoset"
# Every generated message module of concert.v1, found on disk (a new proto
# file is covered without editing this list).
MODULES = tuple(
    importlib.import_module(f"concert.v1.{path.stem}")
    for path in sorted((ROOT / "generated/concert/v1").glob("*_pb2.py"))
)


def test_the_protoset_describes_what_the_generated_code_does() -> None:
    protoset = {file.name: file for file in read_protoset().file}
    assert set(protoset) == {m.DESCRIPTOR.name for m in MODULES} | {
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
    }
    for module in MODULES:
        generated = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(generated)
        sourced = descriptor_pb2.FileDescriptorProto()
        sourced.CopyFrom(protoset[module.DESCRIPTOR.name])
        assert sourced.source_code_info.location, f"{sourced.name} has no comments"
        sourced.ClearField("source_code_info")
        assert sourced == generated, sourced.name


def test_grpcurl_describes_a_method_with_its_comment_from_the_protoset() -> None:
    described = grpcurl_output(
        "-protoset", str(PROTOSET), "describe", "concert.v1.PaymentService.Pay"
    )
    assert "rpc Pay ( .concert.v1.PayRequest ) returns ( .concert.v1.PayResponse );" in described
    assert "Errors:" in described
    message = grpcurl_output("-protoset", str(PROTOSET), "describe", "concert.v1.ChargeRequest")
    assert "// The amount to add, in the smallest currency unit" in message


def test_default_json_names_are_dropped_and_a_custom_one_is_kept() -> None:
    message = descriptor_pb2.DescriptorProto(
        name="M",
        field=[
            descriptor_pb2.FieldDescriptorProto(name="user_id", json_name="userId"),
            descriptor_pb2.FieldDescriptorProto(name="seat_2", json_name="seat2"),
            descriptor_pb2.FieldDescriptorProto(name="amount", json_name="amountInWon"),
        ],
    )
    descriptor_set = descriptor_pb2.FileDescriptorSet(
        file=[descriptor_pb2.FileDescriptorProto(name="m.proto", message_type=[message])]
    )
    protoset.drop_default_json_names(descriptor_set)
    fields = descriptor_set.file[0].message_type[0].field
    assert [f.HasField("json_name") for f in fields] == [False, False, True]
    assert fields[2].json_name == "amountInWon"
