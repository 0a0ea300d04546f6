"""Server reflection: grpc.reflection.v1 beside v1alpha, with the protos' comments.

The client side uses grpcio-reflection's v1alpha message classes on both
services' method paths: the v1 messages are the same fields and numbers, which
the test of the served v1 file checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from server.app import SERVICE_NAMES

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
Request = reflection_pb2.ServerReflectionRequest
Response = reflection_pb2.ServerReflectionResponse


async def ask(
    channel: grpc.aio.Channel, service: str, requests: Sequence[Request]
) -> list[Response]:
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    return [response async for response in call(iter(requests))]


def files_of(response: Response) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]
    return {file.name: file for file in files}


def leading_comment(file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> str:
    for location in file.source_code_info.location:
        if tuple(location.path) == path:
            return location.leading_comments
    return ""


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_both_versions_list_every_service(channel: grpc.aio.Channel, service: str) -> None:
    (response,) = await ask(channel, service, [Request(list_services="")])
    names = {s.name for s in response.list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert {"grpc.health.v1.Health", V1, V1ALPHA} <= names


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_file_descriptors_carry_the_protos_comments(
    channel: grpc.aio.Channel, service: str
) -> None:
    (response,) = await ask(
        channel, service, [Request(file_containing_symbol="concert.v1.PaymentService.Pay")]
    )
    files = files_of(response)
    # The file and its imports, transitively.
    assert {"concert/v1/payment.proto", "google/protobuf/timestamp.proto"} <= set(files)
    payment = files["concert/v1/payment.proto"]
    assert payment.package == "concert.v1"
    (index,) = [i for i, s in enumerate(payment.service) if s.name == "PaymentService"]
    (pay,) = [i for i, m in enumerate(payment.service[index].method) if m.name == "Pay"]
    # FileDescriptorProto: service = 6; ServiceDescriptorProto: method = 2.
    assert "Errors:" in leading_comment(payment, (6, index, 2, pay))
    assert leading_comment(payment, (6, index)).strip()


async def test_v1_describes_itself_with_the_v1alpha_messages(channel: grpc.aio.Channel) -> None:
    (v1_answer, v1alpha_answer) = await ask(
        channel,
        V1,
        [Request(file_containing_symbol=V1), Request(file_containing_symbol=V1ALPHA)],
    )
    v1 = files_of(v1_answer)["grpc/reflection/v1/reflection.proto"]
    v1alpha = files_of(v1alpha_answer)["grpc_reflection/v1alpha/reflection.proto"]
    assert v1.package == "grpc.reflection.v1"
    assert v1.options.java_package == "io.grpc.reflection.v1"
    assert [s.name for s in v1.service] == ["ServerReflection"]
    method = v1.service[0].method[0]
    assert (method.name, method.client_streaming, method.server_streaming) == (
        "ServerReflectionInfo",
        True,
        True,
    )
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"

    def shape(file: descriptor_pb2.FileDescriptorProto) -> list[object]:
        return [
            (
                m.name,
                [(f.name, f.number, f.type, f.label, f.type_name.split(".")[-1]) for f in m.field],
            )
            for m in file.message_type
        ]

    assert shape(v1) == shape(v1alpha)
    assert all(".v1alpha." not in f.type_name for m in v1.message_type for f in m.field)


async def test_error_details_resolve_for_clients_that_decode_them(
    channel: grpc.aio.Channel,
) -> None:
    """Every error carries a google.rpc.ErrorInfo in an Any: grpcurl asks for its type."""
    (response,) = await ask(channel, V1, [Request(file_containing_symbol="google.rpc.ErrorInfo")])
    assert "google/rpc/error_details.proto" in files_of(response)


async def test_an_unknown_symbol_is_not_found_and_the_stream_goes_on(
    channel: grpc.aio.Channel,
) -> None:
    no_service, no_method, found = await ask(
        channel,
        V1,
        [
            Request(file_containing_symbol="concert.v1.NoSuchService"),
            Request(file_containing_symbol="concert.v1.WalletService.NoSuchMethod"),
            Request(file_by_filename="concert/v1/wallet.proto"),
        ],
    )
    assert no_service.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert no_method.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "concert/v1/wallet.proto" in files_of(found)
