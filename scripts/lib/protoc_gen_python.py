"""A protoc plugin for buf.gen.yaml: generated/'s Python code, exactly as scripts/gen writes it.

scripts/gen runs grpcio-tools' protoc, whose built-in generators write the
messages (*_pb2.py), their type stubs (*_pb2.pyi) and the gRPC stubs
(*_pb2_grpc.py). grpcio-tools ships no protoc-gen-* binaries, and buf's own
`protoc_builtin` route hands protoc the compiled files with every field's
json_name filled in, which then lands in each *_pb2.py's serialized descriptor
(protoc, parsing the .proto itself, records json_name only where the file
sets one). So this plugin takes the files buf compiled, drops the json_names
equal to the default protoc would derive, and runs grpcio-tools' protoc on
them: the output is scripts/gen's, byte for byte.

    buf.gen.yaml:  local: [.venv/bin/python, scripts/lib/protoc_gen_python.py]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def default_json_name(field_name: str) -> str:
    """protoc's json_name for a field that sets none: lowerCamelCase of the name."""
    head, *rest = field_name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _drop_default_json_names(messages: list[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in [*message.field, *message.extension]:
            if field.json_name == default_json_name(field.name):
                field.ClearField("json_name")
        _drop_default_json_names(list(message.nested_type))


def as_protoc_parsed(files: list[descriptor_pb2.FileDescriptorProto]) -> bytes:
    """The files as a descriptor set, as protoc would have parsed them from source."""
    copies = []
    for file in files:
        copy = descriptor_pb2.FileDescriptorProto()
        copy.CopyFrom(file)
        _drop_default_json_names(list(copy.message_type))
        for field in copy.extension:
            if field.json_name == default_json_name(field.name):
                field.ClearField("json_name")
        copies.append(copy)
    return descriptor_pb2.FileDescriptorSet(file=copies).SerializeToString()


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory(prefix="protoc-gen-python-") as scratch:
        descriptors = Path(scratch) / "descriptors.binpb"
        descriptors.write_bytes(as_protoc_parsed(list(request.proto_file)))
        out = Path(scratch) / "out"
        out.mkdir()
        status = protoc.main(
            [
                "protoc",
                f"--descriptor_set_in={descriptors}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                *request.file_to_generate,
            ]
        )
        if status != 0:
            response.error = f"grpcio-tools' protoc exited {status}"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    return response


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
