"""`fixbench new-approach NAME` (copy services/_template/ into a new service folder) and
`fixbench conformance` (run the shared conformance suite), kept out of cli.py so that the
command line there stays a thin layer."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from fixbench.v1 import repair_pb2
from orchestrator.spec import REPO_ROOT

TEMPLATE_DIR = REPO_ROOT / "services" / "_template"
# Template file -> file of the new service. The test is stored as .tmpl so that pytest never
# collects it inside the template itself (whose placeholders are not a runnable approach).
TEMPLATE_FILES = {
    "approach.py": "approach.py",
    "Dockerfile": "Dockerfile",
    "requirements.txt": "requirements.txt",
    "README.md": "README.md",
    "service.toml": "service.toml",
    "test_conformance.py.tmpl": "test_conformance.py",
}
LEVELS = tuple(n.removeprefix("REPAIR_LEVEL_").lower() for n in repair_pb2.RepairLevel.keys() if not n.endswith("UNSPECIFIED"))
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
MAX_NAME_LENGTH = 40


class ScaffoldError(ValueError):
    """A name, level or folder that `new-approach` refuses; the message says which and why."""


def check_name(name: str) -> str:
    """The name, when it is a lower-case slug usable as a service, image and compose name."""
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"approach name {name!r} is not a lower-case slug: use letters, digits and single hyphens, starting "
            f"with a letter, at most {MAX_NAME_LENGTH} characters (e.g. 'my-fix')"
        )
    return name


def class_name(name: str) -> str:
    """'my-fix' -> 'MyFixApproach' (the suffix keeps it clear of the SDK's own names)."""
    return "".join(part.capitalize() for part in name.split("-")) + "Approach"


def _render(text: str, name: str, level: str) -> str:
    return text.replace("__CLASS__", class_name(name)).replace("__NAME__", name).replace("__LEVEL__", level)


def _parameter_table(approach_py: Path, cls: str) -> str:
    """The README table, generated from the new approach's own `params` declaration."""
    module_name = f"_fixbench_scaffold_{cls.lower()}"
    spec = importlib.util.spec_from_file_location(module_name, approach_py)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        approach = getattr(module, cls)
        approach.validate_declaration()
        return approach.parameter_table()
    finally:
        sys.modules.pop(module_name, None)


def new_approach(name: str, level: str = "neuron", dest: str | Path = REPO_ROOT / "services",
                 template: str | Path = TEMPLATE_DIR) -> Path:
    """Creates `dest/NAME` from the template with the name, class and level filled in; returns
    the new folder. Refuses a bad name or level and an existing folder; writes the folder
    completely or not at all."""
    check_name(name)
    if level not in LEVELS:
        raise ScaffoldError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    template = Path(template)
    missing = [f for f in TEMPLATE_FILES if not (template / f).is_file()]
    if missing:
        raise ScaffoldError(f"template folder {template} lacks {', '.join(missing)}")
    dest = Path(dest)
    if not dest.is_dir():
        raise ScaffoldError(f"--dir {dest} is not an existing folder")
    target = dest / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; pick another name or remove it first")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        for source, written in TEMPLATE_FILES.items():
            (staging / written).write_text(_render((template / source).read_text(), name, level))
        readme = staging / "README.md"
        readme.write_text(readme.read_text().replace("__PARAMETER_TABLE__",
                                                     _parameter_table(staging / "approach.py", class_name(name))))
        leftovers = [f for f in TEMPLATE_FILES.values()
                     if re.search(r"__(NAME|CLASS|LEVEL|PARAMETER_TABLE)__", (staging / f).read_text())]
        if leftovers:
            raise ScaffoldError(f"placeholders left in {', '.join(leftovers)}: the template and the scaffold disagree")
        staging.chmod(0o755)  # mkdtemp makes it private; a service folder is an ordinary one
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


WRAP_TEMPLATE_DIR = REPO_ROOT / "services" / "_template_wrap"
WRAP_FILES = {**TEMPLATE_FILES, "wrap.py": "wrap.py"}
# The SDK layer that serves a wrapped tool of each framework (and converts its model formats).
WRAP_LAYERS = {"onnx": "sdk", "keras": "sdk-tf", "torch": "sdk-torch"}
WRAP_LAYER_ARGS = {"sdk": "SDK_IMAGE", "sdk-tf": "SDK_TF_IMAGE", "sdk-torch": "SDK_TORCH_IMAGE"}
DEFAULT_WRAP_ENTRY = "python -m tool --model {model} --data {data} --output {output}"
_PLAIN = re.compile(r"^[^\s'\"`$\\]+$")


def new_wrapped_approach(name: str, repo: str, framework: str, commit: str = "", entry: str = DEFAULT_WRAP_ENTRY,
                         level: str = "model", dest: str | Path = REPO_ROOT / "services",
                         template: str | Path = WRAP_TEMPLATE_DIR) -> Path:
    """`new-approach NAME --wrap REPO`: a service that installs the original tool from its git
    repository (at `commit`) into its own environment and runs `entry` per job (see
    services/_template_wrap/README.md). Same guarantees as new_approach."""
    check_name(name)
    if framework not in WRAP_LAYERS:
        raise ScaffoldError(f"--framework {framework!r} is not one of {', '.join(WRAP_LAYERS)}")
    if level not in LEVELS:
        raise ScaffoldError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    for label, value in (("--wrap", repo), ("--commit", commit or "x")):
        if not _PLAIN.match(value):
            raise ScaffoldError(f"{label} {value!r} must be one word without quotes, '$' or backslashes")
    if commit and not re.fullmatch(r"[0-9a-fA-F]{7,40}|[A-Za-z0-9._/-]+", commit):
        raise ScaffoldError(f"--commit {commit!r} is not a commit id or ref")
    if not entry.strip():
        raise ScaffoldError("--entry must name the tool's command")
    layer = WRAP_LAYERS[framework]
    values = {"__REPO__": repo, "__COMMIT__": commit or "HEAD", "__FRAMEWORK__": framework, "__LAYER_ARG__":
              WRAP_LAYER_ARGS[layer], "__LAYER__": layer, '"__ENTRY_LITERAL__"': repr(entry), "__ENTRY__": entry}

    def render(text: str) -> str:
        for key, value in values.items():  # __LAYER_ARG__ and __ENTRY_LITERAL__ before their prefixes
            text = text.replace(key, value)
        return _render(text, name, level)

    template = Path(template)
    missing = [f for f in WRAP_FILES if not (template / f).is_file()]
    if missing:
        raise ScaffoldError(f"template folder {template} lacks {', '.join(missing)}")
    dest = Path(dest)
    if not dest.is_dir():
        raise ScaffoldError(f"--dir {dest} is not an existing folder")
    target = dest / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; pick another name or remove it first")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        for source, written in WRAP_FILES.items():
            (staging / written).write_text(render((template / source).read_text()))
        (staging / "tool-src").mkdir()
        (staging / "tool-src" / "README").write_text("A bare clone of a tool repository the build cannot reach goes "
                                                     "here (see the Dockerfile); it never stays in the image.\n")
        sys.path.insert(0, str(staging))  # approach.py imports its folder's wrap.py
        try:
            table = _parameter_table(staging / "approach.py", class_name(name))
        finally:
            sys.path.remove(str(staging))
            sys.modules.pop("wrap", None)
        readme = staging / "README.md"
        readme.write_text(readme.read_text().replace("__PARAMETER_TABLE__", table))
        leftovers = [f for f in WRAP_FILES.values()
                     if re.search(r"__(NAME|CLASS|LEVEL|PARAMETER_TABLE|REPO|COMMIT|FRAMEWORK|LAYER\w*|ENTRY\w*)__",
                                  (staging / f).read_text())]
        if leftovers:
            raise ScaffoldError(f"placeholders left in {', '.join(leftovers)}: the template and the scaffold disagree")
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`--param key=value` pairs; the value is read as JSON when it parses (numbers, true,
    false), else kept as a string."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ScaffoldError(f"--param {pair!r} must look like name=value")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def conformance_cli(console, address: str | None, store: str | None, service: Path | None,
                    params: list[str], budget: float, grace: float, threads: int = 1, max_trials: int = 0) -> int:
    """Runs the suite for `fixbench conformance`, prints the table and returns the exit code
    (0 when the service conforms, 1 when a check failed)."""
    from fixbench.conformance import SuiteSettings, SuiteUsageError, run_conformance, run_service_conformance

    if (address is None) == (service is None):
        raise ScaffoldError("give either a service ADDRESS (with --store) or --service FOLDER, not both or neither")
    if budget <= 0 or grace < 0:
        raise ScaffoldError(f"--budget must be positive and --grace not negative (got {budget} and {grace})")
    if max_trials < 0:
        raise ScaffoldError(f"--max-trials must not be negative (got {max_trials})")
    settings = SuiteSettings(budget=budget, grace=grace, max_trials=max_trials)
    given = parse_params(params)
    if service is not None:
        if store:
            raise ScaffoldError("--store goes with an ADDRESS; with --service the suite starts its own store")
        if not (service / "approach.py").is_file():
            raise ScaffoldError(f"--service {service} is not an approach service folder (no approach.py)")
        try:
            report = run_service_conformance(service, params=given, settings=settings, threads=threads)
        except SuiteUsageError as exc:
            raise ScaffoldError(str(exc)) from exc
    else:
        if not store:
            # The service reads inputs from its own store; the fixture must be uploaded there.
            raise ScaffoldError("--store ADDR is required with an ADDRESS: the store the service reads from "
                                "(or use --service FOLDER to start both here)")
        try:
            report = run_conformance(address, store, params=given, settings=settings)
        except SuiteUsageError as exc:
            raise ScaffoldError(str(exc)) from exc
    console.print(report.table())
    console.print(("[green]" if report.ok else "[red]") + report.summary() + "[/]")
    if report.log_tail:
        console.print(f"--- last lines of the service's log ---\n{report.log_tail}", markup=False, highlight=False)
    return 0 if report.ok else 1
