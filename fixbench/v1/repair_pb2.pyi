from fixbench.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RepairStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPAIR_STATUS_UNSPECIFIED: _ClassVar[RepairStatus]
    REPAIR_STATUS_REPAIRED: _ClassVar[RepairStatus]
    REPAIR_STATUS_NOT_REPAIRED: _ClassVar[RepairStatus]
    REPAIR_STATUS_UNADAPTABLE: _ClassVar[RepairStatus]
    REPAIR_STATUS_CORRUPTED_OUTPUT: _ClassVar[RepairStatus]
    REPAIR_STATUS_TIMEOUT: _ClassVar[RepairStatus]
    REPAIR_STATUS_OOM: _ClassVar[RepairStatus]
    REPAIR_STATUS_TOOL_ERROR: _ClassVar[RepairStatus]
    REPAIR_STATUS_INFRA_ERROR: _ClassVar[RepairStatus]
    REPAIR_STATUS_CANCELLED: _ClassVar[RepairStatus]

class RepairLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPAIR_LEVEL_UNSPECIFIED: _ClassVar[RepairLevel]
    REPAIR_LEVEL_MODEL: _ClassVar[RepairLevel]
    REPAIR_LEVEL_LAYER: _ClassVar[RepairLevel]
    REPAIR_LEVEL_NEURON: _ClassVar[RepairLevel]
    REPAIR_LEVEL_RECIPE: _ClassVar[RepairLevel]
    REPAIR_LEVEL_BASELINE: _ClassVar[RepairLevel]

class Need(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NEED_UNSPECIFIED: _ClassVar[Need]
    NEED_TRAINING_DATA: _ClassVar[Need]
    NEED_VALIDATION_DATA: _ClassVar[Need]
    NEED_REPAIR_DATA: _ClassVar[Need]
    NEED_TRAINING_RECIPE: _ClassVar[Need]
    NEED_SENSITIVE_ATTRIBUTE: _ClassVar[Need]
REPAIR_STATUS_UNSPECIFIED: RepairStatus
REPAIR_STATUS_REPAIRED: RepairStatus
REPAIR_STATUS_NOT_REPAIRED: RepairStatus
REPAIR_STATUS_UNADAPTABLE: RepairStatus
REPAIR_STATUS_CORRUPTED_OUTPUT: RepairStatus
REPAIR_STATUS_TIMEOUT: RepairStatus
REPAIR_STATUS_OOM: RepairStatus
REPAIR_STATUS_TOOL_ERROR: RepairStatus
REPAIR_STATUS_INFRA_ERROR: RepairStatus
REPAIR_STATUS_CANCELLED: RepairStatus
REPAIR_LEVEL_UNSPECIFIED: RepairLevel
REPAIR_LEVEL_MODEL: RepairLevel
REPAIR_LEVEL_LAYER: RepairLevel
REPAIR_LEVEL_NEURON: RepairLevel
REPAIR_LEVEL_RECIPE: RepairLevel
REPAIR_LEVEL_BASELINE: RepairLevel
NEED_UNSPECIFIED: Need
NEED_TRAINING_DATA: Need
NEED_VALIDATION_DATA: Need
NEED_REPAIR_DATA: Need
NEED_TRAINING_RECIPE: Need
NEED_SENSITIVE_ATTRIBUTE: Need

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ParameterSpec(_message.Message):
    __slots__ = ("name", "type", "default_json", "help")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default_json: str
    help: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default_json: _Optional[str] = ..., help: _Optional[str] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("name", "version", "level", "paper", "summary", "needs", "parameters", "execution_provider", "torch_device", "sdk_version", "fault_families")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    PAPER_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TORCH_DEVICE_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    FAULT_FAMILIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    level: RepairLevel
    paper: str
    summary: str
    needs: _containers.RepeatedScalarFieldContainer[Need]
    parameters: _containers.RepeatedCompositeFieldContainer[ParameterSpec]
    execution_provider: str
    torch_device: str
    sdk_version: str
    fault_families: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., level: _Optional[_Union[RepairLevel, str]] = ..., paper: _Optional[str] = ..., summary: _Optional[str] = ..., needs: _Optional[_Iterable[_Union[Need, str]]] = ..., parameters: _Optional[_Iterable[_Union[ParameterSpec, _Mapping]]] = ..., execution_provider: _Optional[str] = ..., torch_device: _Optional[str] = ..., sdk_version: _Optional[str] = ..., fault_families: _Optional[_Iterable[str]] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("name", "train", "valid", "repair", "input_shape", "num_classes", "sensitive_attribute", "stand_in")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    STAND_IN_FIELD_NUMBER: _ClassVar[int]
    name: str
    train: _common_pb2.Digest
    valid: _common_pb2.Digest
    repair: _common_pb2.Digest
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    sensitive_attribute: str
    stand_in: bool
    def __init__(self, name: _Optional[str] = ..., train: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., valid: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., repair: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., sensitive_attribute: _Optional[str] = ..., stand_in: _Optional[bool] = ...) -> None: ...

class TrainingRecipe(_message.Message):
    __slots__ = ("architecture", "loss", "optimizer", "learning_rate", "batch_size", "epochs", "activation", "last_activation", "initializer", "regularizer", "regularization_weight", "dropout", "hidden_units", "width_multiplier", "normalize_input", "label_noise", "missing_data", "duplicated_data", "unbalanced_data", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    INITIALIZER_FIELD_NUMBER: _ClassVar[int]
    REGULARIZER_FIELD_NUMBER: _ClassVar[int]
    REGULARIZATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_UNITS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_INPUT_FIELD_NUMBER: _ClassVar[int]
    LABEL_NOISE_FIELD_NUMBER: _ClassVar[int]
    MISSING_DATA_FIELD_NUMBER: _ClassVar[int]
    DUPLICATED_DATA_FIELD_NUMBER: _ClassVar[int]
    UNBALANCED_DATA_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    loss: str
    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    activation: str
    last_activation: str
    initializer: str
    regularizer: str
    regularization_weight: float
    dropout: float
    hidden_units: _containers.RepeatedScalarFieldContainer[int]
    width_multiplier: float
    normalize_input: bool
    label_noise: float
    missing_data: float
    duplicated_data: float
    unbalanced_data: float
    options: _containers.ScalarMap[str, str]
    def __init__(self, architecture: _Optional[str] = ..., loss: _Optional[str] = ..., optimizer: _Optional[str] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., epochs: _Optional[int] = ..., activation: _Optional[str] = ..., last_activation: _Optional[str] = ..., initializer: _Optional[str] = ..., regularizer: _Optional[str] = ..., regularization_weight: _Optional[float] = ..., dropout: _Optional[float] = ..., hidden_units: _Optional[_Iterable[int]] = ..., width_multiplier: _Optional[float] = ..., normalize_input: _Optional[bool] = ..., label_noise: _Optional[float] = ..., missing_data: _Optional[float] = ..., duplicated_data: _Optional[float] = ..., unbalanced_data: _Optional[float] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("wall_seconds", "training_time_multiple", "max_trials", "training_samples_multiple")
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_TIME_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SAMPLES_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    wall_seconds: float
    training_time_multiple: float
    max_trials: int
    training_samples_multiple: float
    def __init__(self, wall_seconds: _Optional[float] = ..., training_time_multiple: _Optional[float] = ..., max_trials: _Optional[int] = ..., training_samples_multiple: _Optional[float] = ...) -> None: ...

class RepairJob(_message.Message):
    __slots__ = ("job_id", "fault_id", "fault_family", "model", "data", "recipe", "faulty_training_seconds", "params", "seed", "budget", "faulty_training_samples", "history", "store_credential")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    FAULT_FAMILY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    FAULTY_TRAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    FAULTY_TRAINING_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    STORE_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    fault_id: str
    fault_family: str
    model: _common_pb2.Digest
    data: DatasetRef
    recipe: TrainingRecipe
    faulty_training_seconds: float
    params: _struct_pb2.Struct
    seed: int
    budget: Budget
    faulty_training_samples: int
    history: _containers.RepeatedCompositeFieldContainer[ModelCheckpoint]
    store_credential: str
    def __init__(self, job_id: _Optional[str] = ..., fault_id: _Optional[str] = ..., fault_family: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., data: _Optional[_Union[DatasetRef, _Mapping]] = ..., recipe: _Optional[_Union[TrainingRecipe, _Mapping]] = ..., faulty_training_seconds: _Optional[float] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., faulty_training_samples: _Optional[int] = ..., history: _Optional[_Iterable[_Union[ModelCheckpoint, _Mapping]]] = ..., store_credential: _Optional[str] = ...) -> None: ...

class ModelCheckpoint(_message.Message):
    __slots__ = ("epoch", "model")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    model: _common_pb2.Digest
    def __init__(self, epoch: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: RepairJob
    def __init__(self, job: _Optional[_Union[RepairJob, _Mapping]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("adaptable", "reason")
    ADAPTABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    adaptable: bool
    reason: str
    def __init__(self, adaptable: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class FixRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: RepairJob
    def __init__(self, job: _Optional[_Union[RepairJob, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("fraction", "stage", "message", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    stage: str
    message: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, fraction: _Optional[float] = ..., stage: _Optional[str] = ..., message: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class LocalisedWeight(_message.Message):
    __slots__ = ("tensor", "index", "score")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    tensor: str
    index: _containers.RepeatedScalarFieldContainer[int]
    score: float
    def __init__(self, tensor: _Optional[str] = ..., index: _Optional[_Iterable[int]] = ..., score: _Optional[float] = ...) -> None: ...

class LocalisedNeuron(_message.Message):
    __slots__ = ("layer", "index", "score")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    layer: str
    index: int
    score: float
    def __init__(self, layer: _Optional[str] = ..., index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class RecipeChange(_message.Message):
    __slots__ = ("field", "old_value_json", "new_value_json")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    field: str
    old_value_json: str
    new_value_json: str
    def __init__(self, field: _Optional[str] = ..., old_value_json: _Optional[str] = ..., new_value_json: _Optional[str] = ...) -> None: ...

class Diagnosis(_message.Message):
    __slots__ = ("weights", "neurons", "layers", "recipe_changes", "repaired_recipe", "summary")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    NEURONS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    RECIPE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_RECIPE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[LocalisedWeight]
    neurons: _containers.RepeatedCompositeFieldContainer[LocalisedNeuron]
    layers: _containers.RepeatedScalarFieldContainer[str]
    recipe_changes: _containers.RepeatedCompositeFieldContainer[RecipeChange]
    repaired_recipe: TrainingRecipe
    summary: str
    def __init__(self, weights: _Optional[_Iterable[_Union[LocalisedWeight, _Mapping]]] = ..., neurons: _Optional[_Iterable[_Union[LocalisedNeuron, _Mapping]]] = ..., layers: _Optional[_Iterable[str]] = ..., recipe_changes: _Optional[_Iterable[_Union[RecipeChange, _Mapping]]] = ..., repaired_recipe: _Optional[_Union[TrainingRecipe, _Mapping]] = ..., summary: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("repair_seconds", "setup_seconds", "output_seconds", "total_seconds")
    REPAIR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SETUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    repair_seconds: float
    setup_seconds: float
    output_seconds: float
    total_seconds: float
    def __init__(self, repair_seconds: _Optional[float] = ..., setup_seconds: _Optional[float] = ..., output_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class RepairResult(_message.Message):
    __slots__ = ("status", "repaired_model", "diagnosis", "timings", "message", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    status: RepairStatus
    repaired_model: _common_pb2.Digest
    diagnosis: Diagnosis
    timings: Timings
    message: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, status: _Optional[_Union[RepairStatus, str]] = ..., repaired_model: _Optional[_Union[_common_pb2.Digest, _Mapping]] = ..., diagnosis: _Optional[_Union[Diagnosis, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., message: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FixResponse(_message.Message):
    __slots__ = ("progress", "log", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    log: str
    result: RepairResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., log: _Optional[str] = ..., result: _Optional[_Union[RepairResult, _Mapping]] = ...) -> None: ...
