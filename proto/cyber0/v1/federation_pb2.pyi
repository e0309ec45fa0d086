from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_TRAIN: _ClassVar[Role]
    ROLE_OBSERVER: _ClassVar[Role]

class Variant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VARIANT_UNSPECIFIED: _ClassVar[Variant]
    VARIANT_UNBIASED: _ClassVar[Variant]
    VARIANT_BIASED: _ClassVar[Variant]

class Distribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTRIBUTION_UNSPECIFIED: _ClassVar[Distribution]
    DISTRIBUTION_GAUSSIAN: _ClassVar[Distribution]
    DISTRIBUTION_RADEMACHER: _ClassVar[Distribution]

class Partition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_UNSPECIFIED: _ClassVar[Partition]
    PARTITION_IID: _ClassVar[Partition]
    PARTITION_DIRICHLET: _ClassVar[Partition]

class Loss(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_UNSPECIFIED: _ClassVar[Loss]
    LOSS_CROSS_ENTROPY: _ClassVar[Loss]
    LOSS_BALANCED_CROSS_ENTROPY: _ClassVar[Loss]
ROLE_UNSPECIFIED: Role
ROLE_TRAIN: Role
ROLE_OBSERVER: Role
VARIANT_UNSPECIFIED: Variant
VARIANT_UNBIASED: Variant
VARIANT_BIASED: Variant
DISTRIBUTION_UNSPECIFIED: Distribution
DISTRIBUTION_GAUSSIAN: Distribution
DISTRIBUTION_RADEMACHER: Distribution
PARTITION_UNSPECIFIED: Partition
PARTITION_IID: Partition
PARTITION_DIRICHLET: Partition
LOSS_UNSPECIFIED: Loss
LOSS_CROSS_ENTROPY: Loss
LOSS_BALANCED_CROSS_ENTROPY: Loss

class Credentials(_message.Message):
    __slots__ = ("client_id", "token")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    token: str
    def __init__(self, client_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("seed", "nu", "local_steps", "mu", "lr", "batch_size", "variant", "distribution", "model", "dataset", "partition", "alpha", "n_clients", "f", "aggregator", "rounds", "loss")
    SEED_FIELD_NUMBER: _ClassVar[int]
    NU_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MU_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    N_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    F_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    seed: int
    nu: int
    local_steps: int
    mu: float
    lr: float
    batch_size: int
    variant: Variant
    distribution: Distribution
    model: str
    dataset: str
    partition: Partition
    alpha: float
    n_clients: int
    f: int
    aggregator: str
    rounds: int
    loss: Loss
    def __init__(self, seed: _Optional[int] = ..., nu: _Optional[int] = ..., local_steps: _Optional[int] = ..., mu: _Optional[float] = ..., lr: _Optional[float] = ..., batch_size: _Optional[int] = ..., variant: _Optional[_Union[Variant, str]] = ..., distribution: _Optional[_Union[Distribution, str]] = ..., model: _Optional[str] = ..., dataset: _Optional[str] = ..., partition: _Optional[_Union[Partition, str]] = ..., alpha: _Optional[float] = ..., n_clients: _Optional[int] = ..., f: _Optional[int] = ..., aggregator: _Optional[str] = ..., rounds: _Optional[int] = ..., loss: _Optional[_Union[Loss, str]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("credentials", "role", "protocol_version")
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    credentials: Credentials
    role: Role
    protocol_version: int
    def __init__(self, credentials: _Optional[_Union[Credentials, _Mapping]] = ..., role: _Optional[_Union[Role, str]] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("plan", "shard_index", "current_round", "model_digest", "model_digest_round", "protocol_version")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_ROUND_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    shard_index: int
    current_round: int
    model_digest: str
    model_digest_round: int
    protocol_version: int
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., shard_index: _Optional[int] = ..., current_round: _Optional[int] = ..., model_digest: _Optional[str] = ..., model_digest_round: _Optional[int] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: Credentials
    def __init__(self, credentials: _Optional[_Union[Credentials, _Mapping]] = ...) -> None: ...

class Update(_message.Message):
    __slots__ = ("round", "values")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    round: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, round: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("round", "accuracy", "loss", "digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    accuracy: float
    loss: float
    digest: str
    def __init__(self, round: _Optional[int] = ..., accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., digest: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("hello", "update", "report")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    update: Update
    report: Report
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., update: _Optional[_Union[Update, _Mapping]] = ..., report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...

class RoundStart(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class Aggregate(_message.Message):
    __slots__ = ("round", "values", "next_open")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_OPEN_FIELD_NUMBER: _ClassVar[int]
    round: int
    values: _containers.RepeatedScalarFieldContainer[float]
    next_open: bool
    def __init__(self, round: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., next_open: _Optional[bool] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("round_start", "aggregate")
    ROUND_START_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    round_start: RoundStart
    aggregate: Aggregate
    def __init__(self, round_start: _Optional[_Union[RoundStart, _Mapping]] = ..., aggregate: _Optional[_Union[Aggregate, _Mapping]] = ...) -> None: ...

class GetAggregatesRequest(_message.Message):
    __slots__ = ("credentials", "from_round", "to_round")
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    FROM_ROUND_FIELD_NUMBER: _ClassVar[int]
    TO_ROUND_FIELD_NUMBER: _ClassVar[int]
    credentials: Credentials
    from_round: int
    to_round: int
    def __init__(self, credentials: _Optional[_Union[Credentials, _Mapping]] = ..., from_round: _Optional[int] = ..., to_round: _Optional[int] = ...) -> None: ...

class GetAggregatesResponse(_message.Message):
    __slots__ = ("aggregates", "completed_rounds")
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    aggregates: _containers.RepeatedCompositeFieldContainer[Aggregate]
    completed_rounds: int
    def __init__(self, aggregates: _Optional[_Iterable[_Union[Aggregate, _Mapping]]] = ..., completed_rounds: _Optional[int] = ...) -> None: ...
