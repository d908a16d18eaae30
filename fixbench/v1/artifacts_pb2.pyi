from fixbench.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: _common_pb2.Digest
    def __init__(self, digest: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ...) -> None: ...

class StatResponse(_message.Message):
    __slots__ = ("present", "max_blob_bytes")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    MAX_BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    present: bool
    max_blob_bytes: int
    def __init__(self, present: _Optional[bool] = ..., max_blob_bytes: _Optional[int] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("digest", "data")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    digest: _common_pb2.Digest
    data: bytes
    def __init__(self, digest: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("digest", "already_present")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    digest: _common_pb2.Digest
    already_present: bool
    def __init__(self, digest: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., already_present: _Optional[bool] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("digest", "offset")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    digest: _common_pb2.Digest
    offset: int
    def __init__(self, digest: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class FindMissingRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedCompositeFieldContainer[_common_pb2.Digest]
    def __init__(self, digests: _Optional[_Iterable[_Union[_common_pb2.Digest, _Mapping]]] = ...) -> None: ...

class FindMissingResponse(_message.Message):
    __slots__ = ("missing", "max_blob_bytes")
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MAX_BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedCompositeFieldContainer[_common_pb2.Digest]
    max_blob_bytes: int
    def __init__(self, missing: _Optional[_Iterable[_Union[_common_pb2.Digest, _Mapping]]] = ..., max_blob_bytes: _Optional[int] = ...) -> None: ...

class AdoptRequest(_message.Message):
    __slots__ = ("digest", "name")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    digest: _common_pb2.Digest
    name: str
    def __init__(self, digest: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class AdoptResponse(_message.Message):
    __slots__ = ("digest", "already_present")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    digest: _common_pb2.Digest
    already_present: bool
    def __init__(self, digest: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., already_present: _Optional[bool] = ...) -> None: ...
