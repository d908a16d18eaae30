"""Study specs (`studies/*.yaml`): validated with pydantic; every error names the key and the
line it is on."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES_DIR = REPO_ROOT / "services"
# A study name becomes a folder (results/<name>): no separators, no leading dot.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class SpecError(ValueError):
    """A study spec that cannot be run; the message names the file, key and line."""


class _Strict(BaseModel):
    # strict: a boolean where a number belongs (or a quoted number) is a mistake, not 1 / 0.
    model_config = ConfigDict(extra="forbid", strict=True)


class ApproachSpec(_Strict):
    name: str = Field(description="service directory name under services/")
    params: dict[str, Any] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1, le=64)
    concurrency: int = Field(1, ge=1, le=256, description="jobs in flight per replica")
    memory_mb: int | None = Field(None, ge=64, description="memory limit per service process (RLIMIT_DATA; the docker runtime sets it inside the container)")
    cpu_seconds: int | None = Field(None, ge=1, description="CPU-time limit per service process (RLIMIT_CPU; docker runtime: a cpu ulimit)")

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        known = available_approaches()
        if value not in known:
            raise ValueError(f"unknown approach {value!r}; available: {', '.join(known)}")
        return value


class BudgetSpec(_Strict):
    wall_seconds: float | None = Field(None, gt=0, description="seconds of wall time (depends on the machine)")
    training_time_multiple: float | None = Field(
        None, gt=0, description="multiple of the faulty model's measured training time (depends on the machine)")
    training_samples_multiple: float | None = Field(
        None, gt=0, description="multiple of the training samples the faulty recipe's training saw (epochs × "
                                "training-set size): the same on every machine, so the same seed gives the same result")
    max_trials: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("wall_seconds", "training_time_multiple", "training_samples_multiple")
                 if getattr(self, k) is not None]
        if not kinds:
            raise ValueError("set wall_seconds, training_time_multiple or training_samples_multiple")
        if len(kinds) > 1:
            raise ValueError(f"set only one of wall_seconds, training_time_multiple and training_samples_multiple "
                             f"(got {', '.join(kinds)})")
        return self

    def key_content(self) -> dict:
        """What of the budget goes into a job key. training_samples_multiple appears only when
        set, so the keys of wall-clock and training-time studies stay what they were."""
        data = self.model_dump()
        if data["training_samples_multiple"] is None:
            del data["training_samples_multiple"]
        return data


class EvaluationSpec(_Strict):
    properties: list[str] = Field(default_factory=lambda: ["accuracy"])
    settings: dict[str, Any] = Field(default_factory=dict)

    # Checked by the evaluator's own rules here, so that a typo is refused before any repair
    # runs rather than after every repair has (the evaluator refusing each job).
    @field_validator("properties")
    @classmethod
    def _known_properties(cls, value: list[str]) -> list[str]:
        from fixbench.analysis.evaluation_settings import resolve_properties

        try:
            resolve_properties(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        from fixbench.analysis.evaluation_settings import check_settings

        sections = {k: v for k, v in value.items() if k != "accuracy_floor"}  # a top-level shorthand
        if "accuracy_floor" in value and (isinstance(value["accuracy_floor"], bool)
                                          or not isinstance(value["accuracy_floor"], (int, float))):
            raise ValueError("settings.accuracy_floor must be a number")
        try:
            check_settings(sections)
        except Exception as exc:
            raise ValueError(str(exc)) from None
        return value


class ConcurrencySpec(_Strict):
    total: int = Field(2, ge=1, le=1024)


class RetrySpec(_Strict):
    attempts: int = Field(5, ge=1, le=20, description="tries per job for infrastructure errors")
    backoff_seconds: float = Field(1.0, ge=0)


class StudySpec(_Strict):
    name: str = Field(description="study name; also the default results folder name")
    suite: str | list[str] = Field(description="fault suite(s) built by `fixbench bench build`")
    scale: float = Field(1.0, gt=0, le=1.0)
    faults: list[str] | None = Field(None, description="restrict to these fault ids of the suite")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    approaches: list[ApproachSpec] = Field(min_length=1)
    budget: BudgetSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    concurrency: ConcurrencySpec = Field(default_factory=ConcurrencySpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    runtime: Literal["local", "external", "docker"] = "local"
    # (file, composed YAML node) the spec was loaded from, for file:line in later checks.
    _source: Any = PrivateAttr(default=None)
    # `--set KEY=VALUE` overrides applied on top of the file (recorded in the ledger per run)
    _overrides: list[str] = PrivateAttr(default_factory=list)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _SAFE_NAME.match(value):
            raise ValueError(f"{value[:100]!r} is not a plain name (letters, digits, '.', '_', '-', '@'; no '/' or leading '.')")
        return value

    @field_validator("approaches")
    @classmethod
    def _known_approaches(cls, value: list[ApproachSpec]) -> list[ApproachSpec]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError(f"approach listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        return value

    @property
    def suites(self) -> list[str]:
        return [self.suite] if isinstance(self.suite, str) else list(self.suite)

    @field_validator("suite")
    @classmethod
    def _plain_suite_names(cls, value):
        for name in [value] if isinstance(value, str) else value:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"suite name {name!r} may hold only letters, digits, '-' and '_'")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        return value


def available_approaches() -> list[str]:
    """Approach services present in services/ (each a folder with approach.py)."""
    return sorted(p.parent.name for p in SERVICES_DIR.glob("*/approach.py") if not p.parent.name.startswith("_"))


def _line_of(node: yaml.Node, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at pydantic location `loc` (deepest node found)."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _duplicate_keys(node: yaml.Node, prefix: str = "") -> list[str]:
    """'line: key: key given twice (first on line N)' for every mapping key given twice (YAML
    keeps the last silently)."""
    found = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            line = key.start_mark.line + 1
            if key.value in first:
                found.append(f"{line}: {name}: key given twice (first on line {first[key.value]})")
            first.setdefault(key.value, line)
            found += _duplicate_keys(value, f"{name}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{prefix}{i}.")
    return found


def where(spec: StudySpec, loc: tuple) -> str:
    """'file:line' of the key at `loc` in the file `spec` came from ('study spec' otherwise)."""
    source = spec._source
    if source is None:
        return "study spec"
    path, node = source
    return f"{path}:{_line_of(node, loc)}"


_PARAM_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _param_type_error(kind: str, value: Any) -> bool:
    if kind == "bool":
        return not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer()
    if kind == "float":
        return isinstance(value, bool) or not isinstance(value, (int, float))
    if kind == "str":
        return not isinstance(value, str)
    return False


def check_approach_params(spec: StudySpec, describes: dict[str, Any]) -> None:
    """Checks every approach's `params` against its service's Describe (names and types),
    before any job runs: a misspelt or mistyped parameter is the study's error, refused with
    file, line and key, never a TOOL_ERROR (or a retried infrastructure error) per job."""
    lines = []
    for i, approach in enumerate(spec.approaches):
        describe = describes.get(approach.name)
        if describe is None:
            continue
        declared = {p.name: p.type for p in describe.parameters}
        for name, value in approach.params.items():
            loc = ("approaches", i, "params", name)
            if name not in declared:
                lines.append(f"{where(spec, loc)}: approaches.{i}.params.{name}: {approach.name} has no parameter "
                             f"{name!r}; it declares {', '.join(declared) or 'none'}")
            elif _param_type_error(declared[name], value):
                lines.append(f"{where(spec, loc)}: approaches.{i}.params.{name}: {approach.name}'s parameter {name} "
                             f"must be {_PARAM_TYPES.get(declared[name], declared[name])}, not {value!r}")
    if lines:
        raise SpecError("invalid study spec:\n  " + "\n  ".join(lines))


def apply_overrides(data: dict, overrides: Sequence[str], path: Path) -> dict:
    """`--set KEY=VALUE` on the spec's data before it is validated, like the file: KEY is a
    dotted path (`seeds`, `budget.wall_seconds`, `approaches.finetune.params.epochs`, where a
    list of approaches is indexed by name or position), VALUE is YAML (`[0,1,2]`, `4`,
    `true`, `"text"`). A path that leads nowhere is refused naming the key."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set seeds=[0,1,2]")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {key}: the value {raw!r} is not valid YAML: {exc}") from None
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = _list_item(node, part, key, where)
            elif isinstance(node, dict):
                if part not in node:
                    node[part] = {}
                node = node[part]
            else:
                raise SpecError(f"--set {key}: {where} is a {type(node).__name__}, not a mapping")
        last = parts[-1]
        if isinstance(node, list):
            index = _list_index(node, last, key)
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(f"--set {key}: {'.'.join(parts[:-1])} is a {type(node).__name__}, not a mapping")
    return data


def _list_index(items: list, part: str, key: str) -> int:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    names = [i.get("name") for i in items if isinstance(i, dict)]
    if part in names:
        return names.index(part)
    raise SpecError(f"--set {key}: no entry {part!r} in the list (entries: {', '.join(map(str, names)) or len(items)})")


def _list_item(items: list, part: str, key: str, where: str) -> Any:
    return items[_list_index(items, part, key)]


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> StudySpec:
    """The validated study spec in `path`, with `--set` overrides applied first (see
    `apply_overrides`); they are kept on the spec (`spec.overrides`) for the ledger."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read study spec {path}: {exc.strerror}") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a study spec is a mapping of keys (name, suite, seeds, approaches, budget, …)")
    duplicates = _duplicate_keys(node)
    if duplicates:
        raise SpecError("invalid study spec:\n  " + "\n  ".join(f"{path}:{d}" for d in duplicates))
    apply_overrides(data, overrides, path)
    try:
        spec = StudySpec.model_validate(data)
        spec._source = (str(path), node)
        spec._overrides = list(overrides)
        return spec
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            key = ".".join(str(p) for p in loc) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            from_set = next((o for o in overrides if key == o.partition("=")[0].strip()
                             or key.startswith(o.partition("=")[0].strip() + ".")), None)
            origin = f"--set {from_set.partition('=')[0].strip()}" if from_set else f"{path}:{_line_of(node, loc)}"
            lines.append(f"{origin}: {key}: {msg}")
        raise SpecError("invalid study spec:\n  " + "\n  ".join(lines)) from None
