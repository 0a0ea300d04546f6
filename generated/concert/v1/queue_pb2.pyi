import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueueTokenState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUEUE_TOKEN_STATE_UNSPECIFIED: _ClassVar[QueueTokenState]
    QUEUE_TOKEN_STATE_WAITING: _ClassVar[QueueTokenState]
    QUEUE_TOKEN_STATE_ADMITTED: _ClassVar[QueueTokenState]
    QUEUE_TOKEN_STATE_COMPLETED: _ClassVar[QueueTokenState]
    QUEUE_TOKEN_STATE_EXPIRED: _ClassVar[QueueTokenState]
QUEUE_TOKEN_STATE_UNSPECIFIED: QueueTokenState
QUEUE_TOKEN_STATE_WAITING: QueueTokenState
QUEUE_TOKEN_STATE_ADMITTED: QueueTokenState
QUEUE_TOKEN_STATE_COMPLETED: QueueTokenState
QUEUE_TOKEN_STATE_EXPIRED: QueueTokenState

class PasswordCredential(_message.Message):
    __slots__ = ("email", "password")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("password", "session_token")
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    password: PasswordCredential
    session_token: str
    def __init__(self, password: _Optional[_Union[PasswordCredential, _Mapping]] = ..., session_token: _Optional[str] = ...) -> None: ...

class QueueStatus(_message.Message):
    __slots__ = ("queue_number", "people_ahead", "state", "expire_time", "estimated_wait", "admission_paused")
    QUEUE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PEOPLE_AHEAD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_PAUSED_FIELD_NUMBER: _ClassVar[int]
    queue_number: int
    people_ahead: int
    state: QueueTokenState
    expire_time: _timestamp_pb2.Timestamp
    estimated_wait: _duration_pb2.Duration
    admission_paused: bool
    def __init__(self, queue_number: _Optional[int] = ..., people_ahead: _Optional[int] = ..., state: _Optional[_Union[QueueTokenState, str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., estimated_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., admission_paused: _Optional[bool] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("token", "status")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    token: str
    status: QueueStatus
    def __init__(self, token: _Optional[str] = ..., status: _Optional[_Union[QueueStatus, _Mapping]] = ...) -> None: ...

class GetQueueStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetQueueStatusResponse(_message.Message):
    __slots__ = ("status", "token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: QueueStatus
    token: str
    def __init__(self, status: _Optional[_Union[QueueStatus, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class WatchQueueStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchQueueStatusResponse(_message.Message):
    __slots__ = ("status", "token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: QueueStatus
    token: str
    def __init__(self, status: _Optional[_Union[QueueStatus, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class RefreshTokenRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RefreshTokenResponse(_message.Message):
    __slots__ = ("token", "status")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    token: str
    status: QueueStatus
    def __init__(self, token: _Optional[str] = ..., status: _Optional[_Union[QueueStatus, _Mapping]] = ...) -> None: ...
