"""Checks that every .proto file sets the per-language options, derived from its package.

Code generators for other languages need them: without `go_package` protoc-gen-go
refuses the file ("unable to determine Go import path"), without `java_package`
Java classes land in the bare package `concert.v1`. buf lint's PACKAGE_SAME_*
rules (in STANDARD) only say that the files of one package agree with each other,
and all of them leaving an option out agrees too; this check says each file sets
every option, to the value the conventions derive from its package:

    package concert.v1, file payment_callback.proto
    csharp_namespace     Concert.V1          (the casing: PaymentModule.V1 for paymentmodule.v1)
    go_package           github.com/concert-tickets/reservation/gen/go/concert/v1;concertv1
    java_package         com.concert.v1
    java_multiple_files  true
    java_outer_classname PaymentCallbackProto (the file name in PascalCase + Proto)
    objc_class_prefix    CXX                 (initials of the package's non-version parts, X-padded)
    php_namespace        Concert\\V1
    ruby_package         Concert::V1
    swift_prefix         unset (Swift's default prefix, Concert_V1_, already comes from the package)

A package name has no word breaks ("paymentmodule"), so csharp_namespace says
how each part is cased, and the PHP and Ruby namespaces must use the same casing.

    python scripts/proto_options.py DESCRIPTOR_SET   # e.g. `buf build --exclude-imports -o`
exits 1 and names each file and option that is missing or wrong.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath

from google.protobuf import descriptor_pb2

GO_MODULE = "github.com/concert-tickets/reservation/gen/go"
JAVA_ROOT = "com"

_VERSION = re.compile(r"^v\d+((alpha|beta)\d*)?$")


def _pascal(snake: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in snake.split("_"))


def _objc_prefix(parts: list[str]) -> str:
    initials = "".join(part[0].upper() for part in parts if not _VERSION.match(part))
    return initials.ljust(3, "X")


def _cased_parts(file: descriptor_pb2.FileDescriptorProto) -> list[str] | None:
    """The package's parts as csharp_namespace cases them, if it names the package."""
    parts = file.package.split(".")
    cased = file.options.csharp_namespace.split(".")
    if len(cased) != len(parts):
        return None
    for part, case in zip(parts, cased, strict=True):
        if case.lower() != part or not case[:1].isupper():
            return None
    return cased


def expected_options(file: descriptor_pb2.FileDescriptorProto) -> dict[str, object]:
    """Each option's value for this file, by the conventions in the module docstring."""
    parts = file.package.split(".")
    cased = _cased_parts(file) or [_pascal(part) for part in parts]
    stem = PurePosixPath(file.name).stem
    return {
        "csharp_namespace": ".".join(cased),
        "go_package": f"{GO_MODULE}/{'/'.join(parts)};{''.join(parts)}",
        "java_package": f"{JAVA_ROOT}.{file.package}",
        "java_multiple_files": True,
        "java_outer_classname": f"{_pascal(stem)}Proto",
        "objc_class_prefix": _objc_prefix(parts),
        "php_namespace": "\\".join(cased),
        "ruby_package": "::".join(cased),
    }


# Options that must be left unset, and why (printed with the problem).
UNSET = {
    "swift_prefix": "Swift's default prefix comes from the package already",
}


def problems(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """What is missing or wrong in one file's options; empty when it is right."""
    found: list[str] = []
    if not file.package:
        return [f"{file.name}: declares no package"]
    options = file.options
    if options.HasField("csharp_namespace") and _cased_parts(file) is None:
        found.append(
            f"{file.name}: csharp_namespace {options.csharp_namespace!r} does not name "
            f"package {file.package} (same parts, each capitalised)"
        )
    for name, want in expected_options(file).items():
        if not options.HasField(name):
            found.append(f"{file.name}: option {name} is missing (want {want!r})")
        elif getattr(options, name) != want:
            found.append(f"{file.name}: option {name} is {getattr(options, name)!r}, want {want!r}")
    for name, why in UNSET.items():
        if options.HasField(name):
            found.append(f"{file.name}: option {name} should be unset ({why})")
    return found


def check(files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    return [problem for file in files for problem in problems(file)]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[1]).read_bytes())
    found = check(list(descriptor_set.file))
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        print(
            f"proto options: {len(found)} problem(s); see scripts/proto_options.py",
            file=sys.stderr,
        )
        return 1
    print(f"proto options: {len(descriptor_set.file)} file(s) set every language option")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
