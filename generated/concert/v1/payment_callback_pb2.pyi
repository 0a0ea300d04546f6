from concert.v1 import payment_pb2 as _payment_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModulePaymentOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODULE_PAYMENT_OUTCOME_UNSPECIFIED: _ClassVar[ModulePaymentOutcome]
    MODULE_PAYMENT_OUTCOME_PAID: _ClassVar[ModulePaymentOutcome]
    MODULE_PAYMENT_OUTCOME_REFUND: _ClassVar[ModulePaymentOutcome]
MODULE_PAYMENT_OUTCOME_UNSPECIFIED: ModulePaymentOutcome
MODULE_PAYMENT_OUTCOME_PAID: ModulePaymentOutcome
MODULE_PAYMENT_OUTCOME_REFUND: ModulePaymentOutcome

class ConfirmModulePaymentRequest(_message.Message):
    __slots__ = ("module_payment_id", "reservation_id", "amount", "session_token")
    MODULE_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    module_payment_id: str
    reservation_id: str
    amount: int
    session_token: str
    def __init__(self, module_payment_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., amount: _Optional[int] = ..., session_token: _Optional[str] = ...) -> None: ...

class ConfirmModulePaymentResponse(_message.Message):
    __slots__ = ("outcome", "payment", "refund_reason")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    REFUND_REASON_FIELD_NUMBER: _ClassVar[int]
    outcome: ModulePaymentOutcome
    payment: _payment_pb2.Payment
    refund_reason: str
    def __init__(self, outcome: _Optional[_Union[ModulePaymentOutcome, str]] = ..., payment: _Optional[_Union[_payment_pb2.Payment, _Mapping]] = ..., refund_reason: _Optional[str] = ...) -> None: ...
