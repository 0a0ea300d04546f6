"""Renders docs/api.md from the protos' own comments (one source of truth).

Reads a FileDescriptorSet made by protoc with --include_source_info and writes
Markdown: each service, each method with its request, response and the errors
its comment lists, and each message's fields. scripts/gen runs it; CI's drift
check therefore also fails when docs/api.md is stale.

    python scripts/render_api_docs.py DESCRIPTOR_SET OUTPUT.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

# SourceCodeInfo paths: field numbers inside FileDescriptorProto and friends.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _METHOD, _ENUM_VALUE = 2, 2, 2

_TYPE_NAMES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
}


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(location.path): location.leading_comments.strip("\n")
        for location in file.source_code_info.location
        if location.leading_comments
    }


def _dedent(text: str) -> str:
    return "\n".join(line[1:] if line.startswith(" ") else line for line in text.splitlines())


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type_of(field: descriptor_pb2.FieldDescriptorProto) -> str:
    name = field.type_name.lstrip(".") or _TYPE_NAMES.get(field.type, "?")
    name = name.removeprefix("concert.v1.")
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {name}"
    if field.proto3_optional:
        return f"optional {name}"
    return name


_PREAMBLE = """
Generated from `protos/concert/v1/*.proto` by `scripts/gen`; edit the protos, not this file.

Every error carries a `google.rpc.ErrorInfo` (domain `concert.v1`, the reason named below);
INVALID_ARGUMENT also carries a `google.rpc.BadRequest` naming each bad field, and errors a
client may retry later carry a `google.rpc.RetryInfo`. Any method may also answer UNAVAILABLE
(reasons DATABASE_UNAVAILABLE, DATABASE_BUSY, DATABASE_TIMEOUT, DATABASE_CONFLICT) while the
database is unreachable or overloaded; retrying is safe with the same `request_id`.
"""


_EVOLUTION = """
## How the contract evolves

`concert.v1` changes only additively: new fields, methods, messages and enum values.
`scripts/lint`, and so CI, runs `buf breaking` against the released contract
(`protos/released/contract.binpb`) and fails a retyped, renumbered or removed field
or a removed or renamed method. A breaking change comes as a new package version,
`concert.v2`, served beside `concert.v1` until v1's clients have moved
(docs/deploy.md, "Contract changes"). Clients must ignore fields they do not know.

Every proto file sets the options other languages' generators need (Go
`github.com/concert-tickets/reservation/gen/go/concert/v1;concertv1`, Java
`com.concert.v1` with one class per message, C# `Concert.V1`, ...). The server
answers reflection as `grpc.reflection.v1` and `grpc.reflection.v1alpha`, with
the protos' comments; `generated/concert/v1/concert.v1.protoset` holds the same
descriptors for tools that read a protoset (`grpcurl -protoset`).
"""


def render(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    own = [f for f in files if f.package == "concert.v1"]
    out = ["# concert.v1 API reference", "", _PREAMBLE.strip(), "", _EVOLUTION.strip(), ""]
    for file in own:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            out += [f"## {service.name}", "", _dedent(comments.get((_SERVICE, s_index), "")), ""]
            for m_index, method in enumerate(service.method):
                request = method.input_type.removeprefix(".concert.v1.")
                response = method.output_type.removeprefix(".concert.v1.")
                stream = "stream " if method.server_streaming else ""
                out += [
                    f"### {service.name}.{method.name}",
                    "",
                    f"`{method.name}({request}) returns ({stream}{response})`",
                    "",
                    _dedent(comments.get((_SERVICE, s_index, _METHOD, m_index), "")),
                    "",
                ]
    out += ["## Messages", ""]
    for file in own:
        comments = _comments(file)
        for e_index, enum in enumerate(file.enum_type):
            out += [f"### enum {enum.name}", "", _one_line(comments.get((_ENUM, e_index), "")), ""]
            out += ["| value | meaning |", "| --- | --- |"]
            for v_index, value in enumerate(enum.value):
                note = comments.get((_ENUM, e_index, _ENUM_VALUE, v_index), "")
                out.append(f"| `{value.name}` | {_one_line(note)} |")
            out.append("")
        for m_index, message in enumerate(file.message_type):
            out += [f"### {message.name}", "", _one_line(comments.get((_MESSAGE, m_index), "")), ""]
            if not message.field:
                continue
            out += ["| field | type | meaning |", "| --- | --- | --- |"]
            for f_index, field in enumerate(message.field):
                note = comments.get((_MESSAGE, m_index, _FIELD, f_index), "")
                out.append(f"| `{field.name}` | `{_type_of(field)}` | {_one_line(note)} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[1]).read_bytes())
    Path(argv[2]).write_text(render(list(descriptor_set.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
