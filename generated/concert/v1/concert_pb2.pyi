import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Concert(_message.Message):
    __slots__ = ("concert_id", "title", "venue", "create_time")
    CONCERT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    VENUE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    concert_id: str
    title: str
    venue: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, concert_id: _Optional[str] = ..., title: _Optional[str] = ..., venue: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ConcertDate(_message.Message):
    __slots__ = ("date_id", "concert_id", "start_time", "available_seat_count", "total_seat_count")
    DATE_ID_FIELD_NUMBER: _ClassVar[int]
    CONCERT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_SEAT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SEAT_COUNT_FIELD_NUMBER: _ClassVar[int]
    date_id: str
    concert_id: str
    start_time: _timestamp_pb2.Timestamp
    available_seat_count: int
    total_seat_count: int
    def __init__(self, date_id: _Optional[str] = ..., concert_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., available_seat_count: _Optional[int] = ..., total_seat_count: _Optional[int] = ...) -> None: ...

class Seat(_message.Message):
    __slots__ = ("date_id", "seat_number", "price")
    DATE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    date_id: str
    seat_number: int
    price: int
    def __init__(self, date_id: _Optional[str] = ..., seat_number: _Optional[int] = ..., price: _Optional[int] = ...) -> None: ...

class ListConcertsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConcertsResponse(_message.Message):
    __slots__ = ("concerts", "next_page_token")
    CONCERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    concerts: _containers.RepeatedCompositeFieldContainer[Concert]
    next_page_token: str
    def __init__(self, concerts: _Optional[_Iterable[_Union[Concert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAvailableDatesRequest(_message.Message):
    __slots__ = ("concert_id", "page_size", "page_token")
    CONCERT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    concert_id: str
    page_size: int
    page_token: str
    def __init__(self, concert_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAvailableDatesResponse(_message.Message):
    __slots__ = ("dates", "next_page_token")
    DATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dates: _containers.RepeatedCompositeFieldContainer[ConcertDate]
    next_page_token: str
    def __init__(self, dates: _Optional[_Iterable[_Union[ConcertDate, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAvailableSeatsRequest(_message.Message):
    __slots__ = ("date_id", "page_size", "page_token")
    DATE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    date_id: str
    page_size: int
    page_token: str
    def __init__(self, date_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAvailableSeatsResponse(_message.Message):
    __slots__ = ("seats", "next_page_token")
    SEATS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    seats: _containers.RepeatedCompositeFieldContainer[Seat]
    next_page_token: str
    def __init__(self, seats: _Optional[_Iterable[_Union[Seat, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
