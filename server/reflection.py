"""Server reflection: grpc.reflection.v1 beside v1alpha, answering with the protos' comments.

grpcio-reflection (1.85) ships only `grpc.reflection.v1alpha`; newer clients (grpcurl
from 1.9 on, for one) ask for `grpc.reflection.v1` first. The two protocols are the
same messages under another package name (grpc/grpc-proto's v1/reflection.proto is
v1alpha's, renamed), so one servicer, the library's, answers both: the v1 method
is registered with v1alpha's (de)serializers, which read and write the same bytes.
The v1 file itself is derived from the library's v1alpha descriptor (package and
options renamed, see `v1_file`), so `describe grpc.reflection.v1.ServerReflection`
works too and no copy of grpc's proto is kept here.

The generated `_pb2` modules embed descriptors without source info, so reflection
served from them shows bare fields. scripts/gen also builds a protoset with source
info (`generated/concert/v1/concert.v1.protoset`, drift-checked with the rest), and
the servicer answers with its files: `grpcurl describe` shows every comment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)

# Built by scripts/gen next to the generated code: every concert.v1 file and its
# imports, with source info (comments).
PROTOSET = "concert.v1.protoset"


def read_protoset() -> descriptor_pb2.FileDescriptorSet:
    data = resources.files("concert.v1").joinpath(PROTOSET).read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, as v1alpha's file under the v1 package.

    The options are those of the published v1 file, so generated clients of other
    languages that fetch it by reflection name it as grpc's own v1 stubs do.
    """
    old_prefix = f".{reflection_pb2.DESCRIPTOR.package}."
    new_prefix = f".{V1_PACKAGE}."
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = V1_FILE_NAME
    file.package = V1_PACKAGE
    for message in all_messages(file.message_type):
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name.removeprefix(old_prefix)
    for service in file.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type.removeprefix(old_prefix)
            method.output_type = new_prefix + method.output_type.removeprefix(old_prefix)
    file.options.Clear()
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.java_multiple_files = True
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_outer_classname = "ServerReflectionProto"
    return file


def all_messages(
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[descriptor_pb2.DescriptorProto]:
    """Every message of a file's message list, nested ones included."""
    for message in messages:
        yield message
        yield from all_messages(message.nested_type)


def _proto_of(file: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


class _FileWithComments:
    """A pool's file descriptor that serialises as the protoset's copy, comments included.

    The library's servicer reads a file's `name` and `dependencies` to collect what
    it sends and calls `CopyToProto` to serialise each file; this answers those three.
    """

    def __init__(self, file: Any, sourced: dict[str, descriptor_pb2.FileDescriptorProto]):
        self._file = file
        self._sourced = sourced
        self.name: str = file.name

    @property
    def dependencies(self) -> list[_FileWithComments]:
        return [_FileWithComments(dep, self._sourced) for dep in self._file.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        sourced = self._sourced.get(self.name)
        if sourced is None:
            self._file.CopyToProto(proto)
        else:
            proto.CopyFrom(sourced)


class CommentedPool:
    """The files reflection serves: the protoset's (with comments), health, reflection,
    then whatever else the process has loaded.

    A pool of its own, searched first: it holds the derived v1 reflection file
    without claiming that name in protobuf's default pool for the whole process.
    The default pool comes second for the types a client meets inside an Any,
    google.rpc.ErrorInfo and BadRequest in every error's details.
    """

    def __init__(self, protoset: descriptor_pb2.FileDescriptorSet) -> None:
        own = descriptor_pool.DescriptorPool()
        self._sourced = {file.name: file for file in protoset.file}
        files = [
            *protoset.file,
            _proto_of(health_pb2.DESCRIPTOR),
            _proto_of(reflection_pb2.DESCRIPTOR),
            v1_file(),
        ]
        for file in files:
            own.AddSerializedFile(file.SerializeToString())
        self._pools = (own, descriptor_pool.Default())

    def _first(self, lookup: Callable[[Any], Any]) -> Any:
        """The first pool's answer that has one; KeyError when none has."""
        for pool in self._pools[:-1]:
            try:
                return lookup(pool)
            except KeyError:
                pass
        return lookup(self._pools[-1])

    def FindFileByName(self, name: str) -> _FileWithComments:
        return _FileWithComments(self._first(lambda p: p.FindFileByName(name)), self._sourced)

    def FindFileContainingSymbol(self, symbol: str) -> _FileWithComments:
        return _FileWithComments(self._first(lambda p: _file_of(p, symbol)), self._sourced)

    def FindMessageTypeByName(self, name: str) -> Any:
        return self._first(lambda p: p.FindMessageTypeByName(name))

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:
        return self._first(lambda p: p.FindExtensionByNumber(message, number))

    def FindAllExtensions(self, message: Any) -> list[Any]:
        found = {
            ext.full_name: ext for pool in self._pools for ext in pool.FindAllExtensions(message)
        }
        return list(found.values())


def _file_of(pool: Any, symbol: str) -> Any:
    try:
        return pool.FindFileContainingSymbol(symbol)
    except KeyError:
        # The protocol allows <package>.<service>.<method>; protobuf's pool
        # finds no methods by name, so look the method up in its service.
        service_name, _, method = symbol.rpartition(".")
        service = pool.FindServiceByName(service_name)  # KeyError: not found
        if method not in service.methods_by_name:
            raise
        return service.file


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection v1 and v1alpha on `server`, listing `service_names` and both."""
    # `aio` is public (in the module's __all__), defined under a version test mypy
    # does not evaluate.
    aio = reflection.aio  # type: ignore[attr-defined]
    servicer = aio.ReflectionServicer(
        (*service_names, *SERVICE_NAMES), pool=CommentedPool(read_protoset())
    )
    for service_name in SERVICE_NAMES:
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service_name, {"ServerReflectionInfo": handler}),)
        )
