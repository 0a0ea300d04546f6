"""concert.v1.ErrorReason is the one list of reasons: the server raises from it, the protos'
comments and docs/api.md describe it, and nothing says a reason the enum does not have.

Static checks over server/ (its syntax trees) and the protos (their comments, from a
descriptor set with source info); the tests that call the server observe the same reasons
on the wire (ErrorInfo.reason).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from render_api_docs import ReasonDoc, ReasonDocError, error_reasons

from concert.v1.error_reason_pb2 import ErrorReason
from server import errors
from server.errors import REASON_PREFIX, ServiceError, wire_reason

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
PROTOS = ROOT / "protos"
UNSPECIFIED = "ERROR_REASON_UNSPECIFIED"
ALL_NAMES = frozenset(ErrorReason.keys()) - {UNSPECIFIED}
WIRE_NAMES = frozenset(name.removeprefix(REASON_PREFIX) for name in ALL_NAMES)
# Reasons the server once sent and sends no more (reserved in the enum).
RETIRED = frozenset({"CREDENTIALS_INVALID"})
# The error classes of server/errors.py, by name, with their status codes.
ERROR_CLASSES = {
    name: cls.code.name
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, ServiceError) and cls is not ServiceError
}


# The sandbox payment module is another service with its own contract and
# error domain (paymentmodule.v1; server/payment_module/reasons.py).
OTHER_SERVICES = (SERVER / "payment_module",)


def _server_trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SERVER.rglob("*.py")):
        if any(path.is_relative_to(other) for other in OTHER_SERVICES):
            continue
        yield path, ast.parse(path.read_text(), str(path))


def _reason_name(node: ast.AST) -> str | None:
    """ERROR_REASON_X for `ErrorReason.ERROR_REASON_X` (or a bare imported name)."""
    if isinstance(node, ast.Attribute) and node.attr.startswith(REASON_PREFIX):
        return node.attr
    if isinstance(node, ast.Name) and node.id.startswith(REASON_PREFIX):
        return node.id
    return None


def _reasons_used() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for path, tree in _server_trees():
        for node in ast.walk(tree):
            if (name := _reason_name(node)) is not None:
                used.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return used


@pytest.fixture(scope="module")
def proto_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[descriptor_pb2.FileDescriptorProto]:
    out = tmp_path_factory.mktemp("descriptors") / "concert.pb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"--proto_path={PROTOS}",
            f"--proto_path={well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(p) for p in sorted((PROTOS / "concert" / "v1").glob("*.proto"))),
        ]
    )
    assert status == 0
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


@pytest.fixture(scope="module")
def documented(proto_files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, ReasonDoc]:
    return {doc.wire: doc for doc in error_reasons(proto_files)}


def test_the_wire_reason_is_the_name_without_its_prefix() -> None:
    assert wire_reason(ErrorReason.ERROR_REASON_TOKEN_EXPIRED) == "TOKEN_EXPIRED"
    assert all(name.startswith(REASON_PREFIX) for name in ErrorReason.keys())
    # The merged fork stays merged: no value may bring the retired spelling back.
    assert not RETIRED & WIRE_NAMES


def test_the_server_raises_every_reason_and_no_other() -> None:
    used = _reasons_used()
    unknown = {name: where for name, where in used.items() if name not in ALL_NAMES}
    assert not unknown, f"not values of concert.v1.ErrorReason: {unknown}"
    never = sorted(ALL_NAMES - set(used))
    assert not never, f"in the enum but raised nowhere in server/: {never}"
    assert UNSPECIFIED not in used


def test_no_reason_string_is_typed_in_the_server() -> None:
    typed = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for path, tree in _server_trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (
            node.value in WIRE_NAMES | RETIRED
            or (node.value.startswith(REASON_PREFIX) and node.value != REASON_PREFIX)
        )
    ]
    assert not typed, "raise these through ErrorReason instead:\n" + "\n".join(typed)


def _checked_raises() -> Iterator[tuple[str, str, str]]:
    """(reason, status code, where) for each reason given to an error class: in a call
    of the class, or anywhere in the body of the class or of a subclass of it."""
    for path, tree in _server_trees():
        for node in ast.walk(tree):
            code = None
            scope: list[ast.AST] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                code = ERROR_CLASSES.get(node.func.id)
                scope = [*node.args, *(keyword.value for keyword in node.keywords)]
            elif isinstance(node, ast.ClassDef):
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                code = ERROR_CLASSES.get(node.name) or next(
                    (ERROR_CLASSES[b] for b in bases if b in ERROR_CLASSES), None
                )
                scope = [sub for statement in node.body for sub in ast.walk(statement)]
            if code is None:
                continue
            for sub in scope:
                if (name := _reason_name(sub)) is not None:
                    where = f"{path.relative_to(ROOT)}:{sub.lineno}"
                    yield name.removeprefix(REASON_PREFIX), code, where


def test_each_raise_uses_a_status_code_its_reason_documents(
    documented: dict[str, ReasonDoc],
) -> None:
    seen: set[str] = set()
    wrong = []
    for reason, code, where in _checked_raises():
        seen.add(reason)
        if code not in documented[reason].codes:
            wrong.append(
                f"{where}: {reason} raised as {code}, documented {documented[reason].codes}"
            )
    assert not wrong, "\n".join(wrong)
    # Every reason documented as an error is seen raised by an error class (the check
    # above is not vacuous); the others (refund reasons) never are.
    as_errors = {wire for wire, doc in documented.items() if doc.codes}
    assert seen == as_errors


def test_every_reason_documents_its_meaning_code_and_methods(
    documented: dict[str, ReasonDoc],
) -> None:
    assert set(documented) == WIRE_NAMES
    for doc in documented.values():
        assert doc.meaning and doc.methods, doc


def _comments_by_target(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> Iterator[tuple[str, str]]:
    """(`Service.*` or `Service.Method`, comment) for every service and method of concert.v1;
    a method's comment from its `Errors` list on (its prose may mention other methods')."""
    for file in files:
        if file.package != "concert.v1":
            continue
        comments = {
            tuple(location.path): location.leading_comments
            for location in file.source_code_info.location
        }
        for s_index, service in enumerate(file.service):
            yield f"{service.name}.*", comments.get((6, s_index), "")
            for m_index, method in enumerate(service.method):
                text = comments.get((6, s_index, 2, m_index), "")
                yield f"{service.name}.{method.name}", text[text.find("Errors") :]


_REASON_MENTION = re.compile(r"\breasons?\s+((?:[A-Z][A-Z_]+(?:,\s*|\s+or\s+|\s*)?)+)")


def test_proto_comments_name_reasons_as_the_enum_documents_them(
    proto_files: list[descriptor_pb2.FileDescriptorProto], documented: dict[str, ReasonDoc]
) -> None:
    mentions = 0
    disagreements = []
    for target, comment in _comments_by_target(proto_files):
        text = " ".join(comment.replace("//", " ").split())
        for match in _REASON_MENTION.finditer(text):
            for reason in re.findall(r"[A-Z][A-Z_]+", match.group(1)):
                mentions += 1
                doc = documented.get(reason)
                if doc is None:
                    disagreements.append(f"{target}: {reason} is not in ErrorReason")
                    continue
                service = target.split(".")[0]
                if not {target, f"{service}.*", "*"} & set(doc.methods):
                    disagreements.append(f"{target}: {reason} does not list it in Methods")
    assert not disagreements, "\n".join(disagreements)
    assert mentions >= 50, mentions  # the pattern still finds the protos' "(reason X)" mentions


def test_the_renderer_refuses_an_undocumented_reason(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    broken = [
        descriptor_pb2.FileDescriptorProto.FromString(f.SerializeToString()) for f in proto_files
    ]
    [file] = [f for f in broken if f.name == "concert/v1/error_reason.proto"]
    [location] = [
        loc
        for loc in file.source_code_info.location
        if list(loc.path) == [5, 0, 2, 1]  # the first value after UNSPECIFIED
    ]
    location.leading_comments = location.leading_comments.replace(
        "Methods: *", "Methods: AccountService.SignOut"
    )
    with pytest.raises(ReasonDocError, match="SignOut"):
        error_reasons(broken)
    location.leading_comments = location.leading_comments.replace("Code:", "Status:")
    with pytest.raises(ReasonDocError, match="Code"):
        error_reasons(broken)
