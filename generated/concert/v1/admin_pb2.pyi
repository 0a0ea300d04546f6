import datetime

from concert.v1 import concert_pb2 as _concert_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeatSpec(_message.Message):
    __slots__ = ("seat_number", "price")
    SEAT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    seat_number: int
    price: int
    def __init__(self, seat_number: _Optional[int] = ..., price: _Optional[int] = ...) -> None: ...

class ConcertDateSpec(_message.Message):
    __slots__ = ("start_time", "seats")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    SEATS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    seats: _containers.RepeatedCompositeFieldContainer[SeatSpec]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seats: _Optional[_Iterable[_Union[SeatSpec, _Mapping]]] = ...) -> None: ...

class CreateConcertRequest(_message.Message):
    __slots__ = ("title", "venue", "dates", "request_id")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    VENUE_FIELD_NUMBER: _ClassVar[int]
    DATES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    title: str
    venue: str
    dates: _containers.RepeatedCompositeFieldContainer[ConcertDateSpec]
    request_id: str
    def __init__(self, title: _Optional[str] = ..., venue: _Optional[str] = ..., dates: _Optional[_Iterable[_Union[ConcertDateSpec, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateConcertResponse(_message.Message):
    __slots__ = ("concert", "dates")
    CONCERT_FIELD_NUMBER: _ClassVar[int]
    DATES_FIELD_NUMBER: _ClassVar[int]
    concert: _concert_pb2.Concert
    dates: _containers.RepeatedCompositeFieldContainer[_concert_pb2.ConcertDate]
    def __init__(self, concert: _Optional[_Union[_concert_pb2.Concert, _Mapping]] = ..., dates: _Optional[_Iterable[_Union[_concert_pb2.ConcertDate, _Mapping]]] = ...) -> None: ...

class SetAdmissionRequest(_message.Message):
    __slots__ = ("capacity", "paused")
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    paused: bool
    def __init__(self, capacity: _Optional[int] = ..., paused: _Optional[bool] = ...) -> None: ...

class SetAdmissionResponse(_message.Message):
    __slots__ = ("capacity", "paused", "update_time")
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    paused: bool
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, capacity: _Optional[int] = ..., paused: _Optional[bool] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetQueueStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetQueueStatsResponse(_message.Message):
    __slots__ = ("issued_count", "completed_count", "admitted_count", "waiting_count", "capacity", "paused", "completed_by_payment_count", "lapsed_admitted_count", "lapsed_waiting_count", "lost_number_count", "window_end")
    ISSUED_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    WAITING_COUNT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_BY_PAYMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAPSED_ADMITTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAPSED_WAITING_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOST_NUMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    issued_count: int
    completed_count: int
    admitted_count: int
    waiting_count: int
    capacity: int
    paused: bool
    completed_by_payment_count: int
    lapsed_admitted_count: int
    lapsed_waiting_count: int
    lost_number_count: int
    window_end: int
    def __init__(self, issued_count: _Optional[int] = ..., completed_count: _Optional[int] = ..., admitted_count: _Optional[int] = ..., waiting_count: _Optional[int] = ..., capacity: _Optional[int] = ..., paused: _Optional[bool] = ..., completed_by_payment_count: _Optional[int] = ..., lapsed_admitted_count: _Optional[int] = ..., lapsed_waiting_count: _Optional[int] = ..., lost_number_count: _Optional[int] = ..., window_end: _Optional[int] = ...) -> None: ...
