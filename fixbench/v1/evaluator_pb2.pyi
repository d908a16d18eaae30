from fixbench.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_STATUS_UNSPECIFIED: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_OK: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_CORRUPTED_OUTPUT: _ClassVar[EvaluationStatus]
EVALUATION_STATUS_UNSPECIFIED: EvaluationStatus
EVALUATION_STATUS_OK: EvaluationStatus
EVALUATION_STATUS_CORRUPTED_OUTPUT: EvaluationStatus

class EvaluateRequest(_message.Message):
    __slots__ = ("job_id", "original_model", "repaired_model", "test", "repair", "dataset", "properties", "settings", "seed", "sensitive_attribute")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_MODEL_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    original_model: _common_pb2.Digest
    repaired_model: _common_pb2.Digest
    test: _common_pb2.Digest
    repair: _common_pb2.Digest
    dataset: str
    properties: _containers.RepeatedScalarFieldContainer[str]
    settings: _struct_pb2.Struct
    seed: int
    sensitive_attribute: str
    def __init__(self, job_id: _Optional[str] = ..., original_model: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., repaired_model: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., test: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., repair: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., dataset: _Optional[str] = ..., properties: _Optional[_Iterable[str]] = ..., settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., sensitive_attribute: _Optional[str] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("status", "metrics", "notes", "details_json", "message")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class NotesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: EvaluationStatus
    metrics: _containers.ScalarMap[str, float]
    notes: _containers.ScalarMap[str, str]
    details_json: str
    message: str
    def __init__(self, status: _Optional[_Union[EvaluationStatus, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., notes: _Optional[_Mapping[str, str]] = ..., details_json: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: str
    result: EvaluationResult
    def __init__(self, progress: _Optional[str] = ..., result: _Optional[_Union[EvaluationResult, _Mapping]] = ...) -> None: ...
