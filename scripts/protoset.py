"""Rewrites protoc's descriptor set as the protoset scripts/gen checks in.

protoc writes every field's JSON name (`json_name`) into a descriptor set, while
the generated Python code embeds descriptors without the default ones. grpcurl
prints a message's fields by `json_name` when a descriptor has it (`userId`) and
by the field's own name otherwise (`user_id`), so a protoset with them would make
`grpcurl -protoset` and reflection (which serves this protoset's files) answer
in other field names than the server's reflection always did and the README's
walk reads. Dropping the default JSON names (a custom `json_name` stays) makes
the protoset the generated code's descriptors plus the source info (comments).

    python scripts/protoset.py DESCRIPTOR_SET   # rewritten in place
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from server.reflection import all_messages


def default_json_name(name: str) -> str:
    """protoc's JSON name for a field: underscores dropped, the next letter upper-cased."""
    parts = name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def drop_default_json_names(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    for file in descriptor_set.file:
        for message in all_messages(file.message_type):
            for field in (*message.field, *message.extension):
                if field.json_name == default_json_name(field.name):
                    field.ClearField("json_name")
        for field in file.extension:
            if field.json_name == default_json_name(field.name):
                field.ClearField("json_name")


def main(argv: list[str]) -> int:
    path = Path(argv[1])
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    drop_default_json_names(descriptor_set)
    path.write_bytes(descriptor_set.SerializeToString(deterministic=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
