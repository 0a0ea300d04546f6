import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATE_UNSPECIFIED: _ClassVar[PaymentState]
    PAYMENT_STATE_COMPLETED: _ClassVar[PaymentState]
    PAYMENT_STATE_REFUNDED: _ClassVar[PaymentState]
PAYMENT_STATE_UNSPECIFIED: PaymentState
PAYMENT_STATE_COMPLETED: PaymentState
PAYMENT_STATE_REFUNDED: PaymentState

class Payment(_message.Message):
    __slots__ = ("payment_id", "reservation_id", "user_id", "amount", "state", "create_time", "payment_module", "module_payment_id", "refund_reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_MODULE_FIELD_NUMBER: _ClassVar[int]
    MODULE_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    reservation_id: str
    user_id: str
    amount: int
    state: PaymentState
    create_time: _timestamp_pb2.Timestamp
    payment_module: str
    module_payment_id: str
    refund_reason: str
    def __init__(self, payment_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., amount: _Optional[int] = ..., state: _Optional[_Union[PaymentState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payment_module: _Optional[str] = ..., module_payment_id: _Optional[str] = ..., refund_reason: _Optional[str] = ...) -> None: ...

class PayRequest(_message.Message):
    __slots__ = ("reservation_id", "request_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    request_id: str
    def __init__(self, reservation_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PayResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class GetPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class GetModulePaymentRequest(_message.Message):
    __slots__ = ("payment_module", "module_payment_id")
    PAYMENT_MODULE_FIELD_NUMBER: _ClassVar[int]
    MODULE_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_module: str
    module_payment_id: str
    def __init__(self, payment_module: _Optional[str] = ..., module_payment_id: _Optional[str] = ...) -> None: ...

class GetModulePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...
