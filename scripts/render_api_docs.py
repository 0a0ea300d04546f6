"""Renders docs/api.md from the protos' own comments (one source of truth).

Reads a FileDescriptorSet made by protoc with --include_source_info and writes
Markdown: each service, each method with its request, response and the errors
its comment lists, the table of error reasons (from concert.v1.ErrorReason's
value comments: meaning, then `Code:` and `Methods:` lines), and each message's
fields. scripts/gen runs it; CI's drift check therefore also fails when
docs/api.md is stale, and the renderer refuses a reason whose comment lacks its
code or names a method that does not exist.

    python scripts/render_api_docs.py DESCRIPTOR_SET OUTPUT.md
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.rpc import code_pb2

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

Every error carries a `google.rpc.ErrorInfo` (domain `concert.v1`, the reason named below, one
of the enum `concert.v1.ErrorReason`: see [Error reasons](#error-reasons) for each reason's
meaning, code and methods); INVALID_ARGUMENT also carries a `google.rpc.BadRequest` naming each
bad field, and errors a client may retry later carry a `google.rpc.RetryInfo`. Any method may
also answer UNAVAILABLE (reasons DATABASE_UNAVAILABLE, DATABASE_BUSY, DATABASE_TIMEOUT,
DATABASE_CONFLICT) while the database is unreachable or overloaded; retrying is safe with the
same `request_id`.
"""


ERROR_REASON_ENUM = "ErrorReason"
REASON_PREFIX = "ERROR_REASON_"
_STATUS_CODES = frozenset(code_pb2.Code.keys())


@dataclass(frozen=True)
class ReasonDoc:
    """One ErrorReason value as its comment documents it."""

    name: str  # the enum value's name, ERROR_REASON_...
    meaning: str
    codes: tuple[str, ...]  # status code names; empty: never an error status
    methods: tuple[str, ...]  # `Service.Method`, `Service.*` or `*`
    methods_text: str  # as the comment says it, with notes such as "(as refund_reason)"

    @property
    def wire(self) -> str:
        """ErrorInfo.reason as the server sends it."""
        return self.name.removeprefix(REASON_PREFIX)


class ReasonDocError(ValueError):
    """An ErrorReason comment that does not say its code and methods."""


def _labelled(text: str, label: str) -> str:
    """The text after `label:` up to the next label or the end, on one line."""
    match = re.search(rf"^{label}:(.*?)(?=^\w+:|\Z)", text, re.S | re.M)
    if match is None:
        raise ReasonDocError(f"no '{label}:' line")
    return " ".join(match.group(1).split()).rstrip(".")


def _parse_reason(name: str, comment: str, methods: frozenset[str]) -> ReasonDoc:
    text = _dedent(comment)
    meaning = text.split("\nCode:")[0]
    code_text = _labelled(text, "Code")
    codes = () if code_text == "none" else tuple(c.strip() for c in code_text.split(","))
    for code in codes:
        if code not in _STATUS_CODES:
            raise ReasonDocError(f"{code!r} is not a status code")
    # Parentheses say how a method sends it (e.g. as refund_reason); not a name.
    methods_text = _labelled(text, "Methods")
    listed = re.sub(r"\([^)]*\)", "", methods_text)
    named = tuple(m.strip() for m in listed.split(","))
    for method in named:
        if method != "*" and method not in methods:
            raise ReasonDocError(f"{method!r} is no method or service of concert.v1")
    return ReasonDoc(name, _one_line(meaning), codes, named, _one_line(methods_text))


def error_reasons(files: list[descriptor_pb2.FileDescriptorProto]) -> list[ReasonDoc]:
    """Every value of concert.v1.ErrorReason but UNSPECIFIED, parsed from its comment."""
    own = [f for f in files if f.package == "concert.v1"]
    methods = frozenset(
        name
        for file in own
        for service in file.service
        for name in (
            f"{service.name}.*",
            *(f"{service.name}.{method.name}" for method in service.method),
        )
    )
    for file in own:
        comments = _comments(file)
        for e_index, enum in enumerate(file.enum_type):
            if enum.name != ERROR_REASON_ENUM:
                continue
            docs = []
            for v_index, value in enumerate(enum.value):
                if value.number == 0:
                    continue
                comment = comments.get((_ENUM, e_index, _ENUM_VALUE, v_index), "")
                try:
                    docs.append(_parse_reason(value.name, comment, methods))
                except ReasonDocError as problem:
                    raise ReasonDocError(f"{value.name}: {problem}") from None
            return docs
    raise ReasonDocError(f"no enum concert.v1.{ERROR_REASON_ENUM}")


def _reason_enum_comment(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    for file in files:
        for e_index, enum in enumerate(file.enum_type):
            if file.package == "concert.v1" and enum.name == ERROR_REASON_ENUM:
                return _dedent(_comments(file).get((_ENUM, e_index), ""))
    return ""


def _render_reasons(files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    out = [
        "## Error reasons",
        "",
        f"`enum {ERROR_REASON_ENUM}` (`protos/concert/v1/error_reason.proto`):",
        "",
        _reason_enum_comment(files),
        "",
        "| reason | code | methods | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for reason in error_reasons(files):
        codes = ", ".join(reason.codes) or "none (not an error)"
        methods = "every method" if reason.methods == ("*",) else reason.methods_text
        out.append(f"| `{reason.wire}` | {codes} | {methods} | {reason.meaning} |")
    return [*out, ""]


# The sandbox payment module's contract: its own section, after concert.v1's.
_MODULE_PREAMBLE = """
Generated from `protos/paymentmodule/v1/*.proto` by `scripts/gen`. The payment module is a
process of its own (`python -m server.payment_module`, docs/booking.md): fans pay it, and it
reports each payment to concert.v1's PaymentCallbackService. Its errors carry a
`google.rpc.ErrorInfo` in the domain `paymentmodule.v1`.
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
    out = _render_package(
        files, "concert.v1", "# concert.v1 API reference", _PREAMBLE + "\n" + _EVOLUTION
    )
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
    if package == "concert.v1":
        out += _render_reasons(files)
    out += ["## Messages" if package == "concert.v1" else f"## Messages ({package})", ""]
    for file in own:
        comments = _comments(file)
        for e_index, enum in enumerate(file.enum_type):
            if enum.name == ERROR_REASON_ENUM:  # its table is above
                continue
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
