import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModulePaymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODULE_PAYMENT_STATE_UNSPECIFIED: _ClassVar[ModulePaymentState]
    MODULE_PAYMENT_STATE_SUCCEEDED: _ClassVar[ModulePaymentState]
    MODULE_PAYMENT_STATE_DECLINED: _ClassVar[ModulePaymentState]
    MODULE_PAYMENT_STATE_REFUNDED: _ClassVar[ModulePaymentState]

class ServerAnswer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_ANSWER_UNSPECIFIED: _ClassVar[ServerAnswer]
    SERVER_ANSWER_NOT_REPORTED: _ClassVar[ServerAnswer]
    SERVER_ANSWER_PENDING: _ClassVar[ServerAnswer]
    SERVER_ANSWER_PAID: _ClassVar[ServerAnswer]
    SERVER_ANSWER_REFUND: _ClassVar[ServerAnswer]
MODULE_PAYMENT_STATE_UNSPECIFIED: ModulePaymentState
MODULE_PAYMENT_STATE_SUCCEEDED: ModulePaymentState
MODULE_PAYMENT_STATE_DECLINED: ModulePaymentState
MODULE_PAYMENT_STATE_REFUNDED: ModulePaymentState
SERVER_ANSWER_UNSPECIFIED: ServerAnswer
SERVER_ANSWER_NOT_REPORTED: ServerAnswer
SERVER_ANSWER_PENDING: ServerAnswer
SERVER_ANSWER_PAID: ServerAnswer
SERVER_ANSWER_REFUND: ServerAnswer

class ModulePayment(_message.Message):
    __slots__ = ("payment_id", "reservation_id", "amount", "state", "decline_reason", "server_answer", "server_payment_id", "refund_reason", "callback_attempts", "account_id", "card_last4", "create_time", "answer_time", "refund_time")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    SERVER_ANSWER_FIELD_NUMBER: _ClassVar[int]
    SERVER_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_REASON_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_LAST4_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TIME_FIELD_NUMBER: _ClassVar[int]
    REFUND_TIME_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    reservation_id: str
    amount: int
    state: ModulePaymentState
    decline_reason: str
    server_answer: ServerAnswer
    server_payment_id: str
    refund_reason: str
    callback_attempts: int
    account_id: str
    card_last4: str
    create_time: _timestamp_pb2.Timestamp
    answer_time: _timestamp_pb2.Timestamp
    refund_time: _timestamp_pb2.Timestamp
    def __init__(self, payment_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., amount: _Optional[int] = ..., state: _Optional[_Union[ModulePaymentState, str]] = ..., decline_reason: _Optional[str] = ..., server_answer: _Optional[_Union[ServerAnswer, str]] = ..., server_payment_id: _Optional[str] = ..., refund_reason: _Optional[str] = ..., callback_attempts: _Optional[int] = ..., account_id: _Optional[str] = ..., card_last4: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., answer_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refund_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TopUpRequest(_message.Message):
    __slots__ = ("account_id", "amount", "request_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount: int
    request_id: str
    def __init__(self, account_id: _Optional[str] = ..., amount: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class TopUpResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: int
    def __init__(self, balance: _Optional[int] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: int
    def __init__(self, balance: _Optional[int] = ...) -> None: ...

class PayReservationRequest(_message.Message):
    __slots__ = ("request_id", "reservation_id", "amount", "session_token", "account_id", "card_number")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reservation_id: str
    amount: int
    session_token: str
    account_id: str
    card_number: str
    def __init__(self, request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., amount: _Optional[int] = ..., session_token: _Optional[str] = ..., account_id: _Optional[str] = ..., card_number: _Optional[str] = ...) -> None: ...

class PayReservationResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: ModulePayment
    def __init__(self, payment: _Optional[_Union[ModulePayment, _Mapping]] = ...) -> None: ...

class GetModulePaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class GetModulePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: ModulePayment
    def __init__(self, payment: _Optional[_Union[ModulePayment, _Mapping]] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "request_id")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    request_id: str
    def __init__(self, payment_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RefundPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: ModulePayment
    def __init__(self, payment: _Optional[_Union[ModulePayment, _Mapping]] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "next_page_token")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[ModulePayment]
    next_page_token: str
    def __init__(self, payments: _Optional[_Iterable[_Union[ModulePayment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
