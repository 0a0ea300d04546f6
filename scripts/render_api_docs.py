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


def _type_of(field: descriptor_pb2.FieldDescriptorProto, package: str) -> str:
    name = field.type_name.lstrip(".") or _TYPE_NAMES.get(field.type, "?")
    name = name.removeprefix(f"{package}.")
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


# The sandbox payment module's contract: its own section, after concert.v1's.
_MODULE_PREAMBLE = """
Generated from `protos/paymentmodule/v1/*.proto` by `scripts/gen`. The payment module is a
process of its own (`python -m server.payment_module`, docs/booking.md): fans pay it, and it
reports each payment to concert.v1's PaymentCallbackService. Its errors carry a
`google.rpc.ErrorInfo` in the domain `paymentmodule.v1`.
"""


def render(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    out = _render_package(files, "concert.v1", "# concert.v1 API reference", _PREAMBLE)
    module = _render_package(
        files,
        "paymentmodule.v1",
        "# paymentmodule.v1 API reference (the sandbox payment module)",
        _MODULE_PREAMBLE,
    )
    out += ["", *module]
    return "\n".join(out).rstrip() + "\n"


def _render_package(
    files: list[descriptor_pb2.FileDescriptorProto], package: str, title: str, preamble: str
) -> list[str]:
    own = [f for f in files if f.package == package]
    if not own:
        return []
    out = [title, "", preamble.strip(), ""]
    for file in own:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            out += [f"## {service.name}", "", _dedent(comments.get((_SERVICE, s_index), "")), ""]
            for m_index, method in enumerate(service.method):
                request = method.input_type.removeprefix(f".{package}.")
                response = method.output_type.removeprefix(f".{package}.")
                stream = "stream " if method.server_streaming else ""
                out += [
                    f"### {service.name}.{method.name}",
                    "",
                    f"`{method.name}({request}) returns ({stream}{response})`",
                    "",
                    _dedent(comments.get((_SERVICE, s_index, _METHOD, m_index), "")),
                    "",
                ]
    out += ["## Messages" if package == "concert.v1" else f"## Messages ({package})", ""]
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
                out.append(f"| `{field.name}` | `{_type_of(field, package)}` | {_one_line(note)} |")
            out.append("")
    return out


def main(argv: list[str]) -> int:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[1]).read_bytes())
    Path(argv[2]).write_text(render(list(descriptor_set.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
