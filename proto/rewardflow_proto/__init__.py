"""The rewardflow wire contract: typed messages and the msgpack/JSON codec (see proto/README.md)."""

from rewardflow_proto.codec import (
    JSON,
    MSGPACK,
    ContractError,
    Limits,
    decode_error,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    media_type,
)
from rewardflow_proto.messages import (
    ERROR_STATUS,
    ITEM_ERROR_CODES,
    VERSION,
    EncodedImage,
    ErrorBody,
    ItemError,
    ScoreRequest,
    ScoreResponse,
)

__all__ = [
    "ERROR_STATUS",
    "ITEM_ERROR_CODES",
    "JSON",
    "MSGPACK",
    "VERSION",
    "ContractError",
    "EncodedImage",
    "ErrorBody",
    "ItemError",
    "Limits",
    "ScoreRequest",
    "ScoreResponse",
    "decode_error",
    "decode_request",
    "decode_response",
    "encode_error",
    "encode_request",
    "encode_response",
    "media_type",
]
