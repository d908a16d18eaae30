"""Runs a study end to end: build/load the faults, start the services, run every job
through the scheduler into the ledger, write and print the results, stop the services."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fixbench.artifacts.client import ArtifactClient
from fixbench.faults import ensure_suite
from fixbench.faults.bundle import FILES, Fault
from fixbench.security.limits import ResourceLimits
from fixbench.security.scope import KEY_FILE_ENV, load_key, new_key_file
from fixbench.v1 import repair_pb2
from fixbench.v1.common_pb2 import Digest
from orchestrator.evaluator_client import EvaluationRefused, EvaluatorClient, InfraFailure
from orchestrator.folder_lock import FolderBusy, results_folder_lock
from orchestrator.jobs import Job, make_job
from orchestrator.leaderboard import write_leaderboard
from orchestrator.ledger import Ledger
from orchestrator.report import pending_note, write_report
from orchestrator.results import print_summary, results_frame, write_results
from orchestrator.robustness_phase import DetailRecordingScheduler, RobustnessPhase, phase_one_spec, wants_phase
from orchestrator.runtime_external import ExternalRuntime
from orchestrator.runtime_local import LocalRuntime
from orchestrator.scheduler import Scheduler
from orchestrator.spec import SERVICES_DIR, SpecError, StudySpec, check_approach_params
from orchestrator.study_tables import StudyTables

DEFAULT_BENCH = Path(os.environ.get("FIXBENCH_BENCH", ".fixbench/bench"))
log = logging.getLogger("fixbench.orchestrator")


class StudyError(RuntimeError):
    """A study that could not finish; the message says what to do."""


def select_faults(spec: StudySpec, bench_dir: Path, console: Console) -> list[Fault]:
    from fixbench.faults import suite_recipes

    wanted = None if spec.faults is None else set(spec.faults)
    if wanted is not None:
        # Checked before anything is built; then only the named faults are built.
        known = {r.id for suite in spec.suites for r in suite_recipes(suite)}
        missing = sorted(wanted - known)
        if missing:
            raise StudyError(f"faults {missing} are not in suite(s) {spec.suites}; they have {sorted(known)}")
    faults: list[Fault] = []
    for suite in spec.suites:
        only = None if wanted is None else wanted & {r.id for r in suite_recipes(suite)}
        if only == set():
            continue
        faults += ensure_suite(suite, bench_dir, spec.scale, only=only, on_fault=lambda r, i, n, suite=suite: console.print(
            f"[dim]{suite} fault {i + 1}/{n}: {r.id} (building if not cached)[/]"))
    return faults


def with_scale(spec: StudySpec, scale: str | float) -> StudySpec:
    """`spec` at another dataset scale (a number in (0, 1] or a named scale). Scale is a
    fault-build parameter, so other scales are other faults and other jobs; a changed scale
    also renames the study `NAME@SCALE`, so its rows never pool with the spec's own scale
    in one ledger or report."""
    from pydantic import ValidationError

    from fixbench.faults import parse_scale

    try:
        value = parse_scale(scale)
        scaled = StudySpec.model_validate({**spec.model_dump(), "scale": value})
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise SpecError(f"--scale {scale}: {detail}") from None
    if value != spec.scale:
        scaled = scaled.model_copy(update={"name": f"{spec.name}@{value:g}"})
    scaled._source = spec._source  # later checks still name the file and line
    return scaled


def record_faults(spec: StudySpec, faults: list[Fault], tables: StudyTables) -> None:
    """Keeps each fault's metadata in the ledger file, so the report can name its subject
    (and whether its dataset is a stand-in) from the ledger alone."""
    from fixbench.data.errors import UnknownDatasetError
    from fixbench.data.registry import get_dataset
    from fixbench.faults.errors import UnknownSuiteError

    # The suite's order, not the position among the faults this run takes: a study run in
    # parts (`faults: [...]`) then lists its faults alike in every part and in the merge.
    try:
        from fixbench.faults.suites import suite_recipes

        recipes = [recipe for suite in spec.suites for recipe in suite_recipes(suite)]
        position = {recipe.id: i for i, recipe in enumerate(recipes)}
    except UnknownSuiteError:  # a suite this code does not define: keep the run's own order
        position = {}
    for i, fault in enumerate(faults):
        order = position.get(fault.id, i)
        try:
            stands_in_for = get_dataset(fault.dataset).stands_in_for
        except UnknownDatasetError:
            stands_in_for = None
        tables.record_fault(spec.name, fault, order=order, stands_in_for=stands_in_for)


def upload_faults(faults: list[Fault], store_address: str, cache_dir: Path, store_dir: str | None = None) -> None:
    """Sends the store the fault files it lacks: one FindMissing for all of them (instead of
    a Stat per file), under the digests the bundles record (the store verifies what is sent).
    `store_dir`: the store's root when it shares this filesystem (Addresses.store_dir): the
    files are staged there and adopted instead of streamed, verified alike."""
    files = []
    for fault in faults:
        for name in FILES:
            d = fault.digests[name]
            files.append((fault.path(name), Digest(sha256=d["sha256"], size_bytes=int(d["size_bytes"]))))
        for entry in fault.history:  # training-history checkpoints (RepairJob.history)
            files.append((fault.root / entry["file"], Digest(sha256=entry["sha256"], size_bytes=int(entry["size_bytes"]))))
    with ArtifactClient(store_address, cache_dir, store_dir=store_dir) as client:
        client.upload_files(files)


RUNTIMES = ("local", "external", "docker")


def service_fingerprint(name: str) -> str | None:
    """Hash of the approach's service folder (paths and contents, caches left out) and of the
    SDK's Approach class: everything a local service's Describe version can come from. None
    when the folder is not here."""
    folder = SERVICES_DIR / name
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in {".pyc", ".pyo"})
    sdk_approach = Path(__file__).resolve().parent.parent / "fixbench" / "sdk" / "approach.py"
    for label, path in [*((p.relative_to(folder).as_posix(), p) for p in files), ("<sdk>", sdk_approach)]:
        h.update(label.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def nothing_left(spec: StudySpec, faults: list[Fault], ledger: Ledger, tables: StudyTables, kind: str) -> list[str] | None:
    """The spec's job keys when every one of them is already done, computed without starting a
    service (each approach's version from the ledger, for its service folder as it is now);
    None when some job (or the robustness phase) may be left, or a version is not known, so
    the services must start. Only for the local runtime: there the folder is the service;
    an image or an external service may differ from it."""
    if kind != "local":
        return None
    keys: list[str] = []
    keys_by_fault: dict[str, list[str]] = {}
    for approach in spec.approaches:
        fingerprint = service_fingerprint(approach.name)
        version = None if fingerprint is None else ledger.known_version(spec.name, approach.name, fingerprint)
        if version is None:
            return None
        for fault in faults:
            for seed in spec.seeds:
                key = make_job(approach, version, fault, seed, spec).key
                if ledger.state(key) != "done":
                    return None
                keys.append(key)
                keys_by_fault.setdefault(fault.id, []).append(key)
    if wants_phase(spec):
        todo, report = RobustnessPhase(spec, ledger, tables, evaluator_address="").plan(faults, keys_by_fault)
        if todo or report.waiting_faults:
            return None
    return keys


def make_runtime(kind: str, spec: StudySpec, out: Path, threads_per_service: int = 1, image_tag: str | None = None):
    """The runtime that starts (or finds) the services: local processes, addresses from the
    environment, or containers started through the Docker SDK from `fixbench/*:<image_tag>`
    (default $FIXBENCH_TAG, else latest)."""
    if kind not in RUNTIMES:
        raise StudyError(f"unknown runtime {kind!r}: use one of {', '.join(RUNTIMES)}")
    if image_tag is not None and kind != "docker":
        raise StudyError(f"--image-tag applies to the docker runtime only (this study uses the {kind} runtime)")
    # approaches[].memory_mb / cpu_seconds become rlimits of the service processes
    limits = {a.name: ResourceLimits(a.memory_mb, a.cpu_seconds) for a in spec.approaches}
    if kind == "external":
        return ExternalRuntime()
    if kind == "docker":
        from orchestrator.runtime_docker import DockerRuntime

        return DockerRuntime(out, spec.name, image_tag=image_tag or os.environ.get("FIXBENCH_TAG") or "latest",
                             threads_per_service=threads_per_service, limits=limits)
    return LocalRuntime(out, threads_per_service=threads_per_service, limits=limits)


def run_study(spec: StudySpec, out_dir: str | Path, bench_dir: str | Path = DEFAULT_BENCH,
              console: Console | None = None, threads_per_service: int = 1, runtime: str | None = None,
              image_tag: str | None = None) -> int:
    """Runs (or resumes) the study; returns the number of jobs still not done. `runtime`
    overrides the spec's (local, external or docker); `image_tag` picks the docker runtime's images.
    The results folder is locked for the whole run: a second orchestrator on it is refused."""
    try:
        lock = results_folder_lock(Path(out_dir).resolve())
        lock.__enter__()
    except FolderBusy as exc:
        raise StudyError(str(exc)) from None
    # Scoped store credentials (fixbench.security.scope): without a key from the environment
    # the run makes one in the results folder; the store and the evaluator started for the
    # run inherit its path, and each job's credential is signed with it.
    own_key = load_key() is None
    if own_key:
        os.environ[KEY_FILE_ENV] = str(new_key_file(Path(out_dir).resolve() / ".store.key"))
    try:
        return _run_study(spec, out_dir, bench_dir, console, threads_per_service, runtime, image_tag)
    finally:
        if own_key:
            os.environ.pop(KEY_FILE_ENV, None)
        lock.__exit__(None, None, None)


def _run_study(spec: StudySpec, out_dir: str | Path, bench_dir: str | Path, console: Console | None,
               threads_per_service: int, runtime: str | None, image_tag: str | None) -> int:
    console = console or Console()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=out / "orchestrator.log", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    kind = runtime or spec.runtime
    # Built (not started) before the faults, so a wrong runtime option fails at once.
    engine = make_runtime(kind, spec, out, threads_per_service, image_tag)
    faults = select_faults(spec, Path(bench_dir), console)
    ledger = Ledger(out / "ledger.sqlite")
    tables = StudyTables(out / "ledger.sqlite")
    try:
        record_faults(spec, faults, tables)
        tables.record_run(spec.name, str(spec._source[0]) if spec._source else "", spec._overrides)
        done_keys = nothing_left(spec, faults, ledger, tables, kind)
        if done_keys is not None:
            # A finished study is only reported again: no store, evaluator or service starts.
            tables.record_current_jobs(spec.name, done_keys)
            console.print(f"{len(done_keys)} jobs, {len(done_keys)} already done, 0 to run; no services started")
        else:
            with engine as runtime_:
                console.print(f"[dim]{kind} runtime: store, evaluator and {len(spec.approaches)} approach service(s)…[/]")
                addresses = runtime_.start({a.name: a.replicas for a in spec.approaches})
                upload_faults(faults, addresses.store, out / "cache" / "orchestrator", addresses.store_dir)
                fingerprints = {a.name: service_fingerprint(a.name) for a in spec.approaches} if kind == "local" else {}
                asyncio.run(_run(spec, faults, ledger, tables, addresses, runtime_, console, fingerprints))
        frame = results_frame(ledger, spec.name)
        csv, parquet = write_results(frame, out)
        sets = {f.id: s for f in faults if (s := tables.robustness_set(spec.name, f.id)) is not None}
        written = write_report(frame, out, spec.name, tables.faults(spec.name), sets)
        write_leaderboard(out.parent)  # several studies in one results folder: compare them
        print_summary(frame, f"study {spec.name}: {len(frame)} jobs", console)
        console.print(f"results: {csv} and {parquet}; report: {written['report']}")
        pending = int((frame["state"] != "done").sum()) if not frame.empty else 0
        if pending:
            console.print(f"[yellow]{pending_note(frame)}[/]")
        return pending
    finally:
        tables.close()
        ledger.close()


async def _run(spec, faults, ledger, tables, addresses, runtime, console, fingerprints=None) -> None:
    if wants_phase(spec):
        # Robustness runs as phase 2 on inputs common to every model; phase 1 records them.
        scheduler = DetailRecordingScheduler(phase_one_spec(spec), ledger, addresses.approaches, addresses.evaluator,
                                             log_tail=runtime.log_tail, tables=tables,
                                             exit_cause=getattr(runtime, "exit_cause", None))
    else:
        scheduler = Scheduler(spec, ledger, addresses.approaches, addresses.evaluator, log_tail=runtime.log_tail,
                              exit_cause=getattr(runtime, "exit_cause", None))
    unavailable = dict(getattr(runtime, "unavailable", {}))
    describes = {a.name: await scheduler.describe(a.name) for a in spec.approaches if a.name not in unavailable}
    # Parameter names and types against each service's Describe, before any job runs.
    check_approach_params(spec, describes)
    versions = {name: d.version for name, d in describes.items()}
    for name, version in versions.items():
        # so that a later run can compute these jobs' keys without starting the services
        if (fingerprints or {}).get(name):
            ledger.record_version(spec.name, name, fingerprints[name], version)
    levels = {name: repair_pb2.RepairLevel.Name(d.level).removeprefix("REPAIR_LEVEL_").lower()
              for name, d in describes.items()}
    jobs: list[Job] = []
    jobs_by_fault: dict[str, list[str]] = {}
    current: list[str] = []  # every job key of the spec as it is now
    for approach in spec.approaches:
        for fault in faults:
            for seed in spec.seeds:
                if approach.name in unavailable:
                    current.append(record_unavailable(ledger, spec, approach, fault, seed, unavailable[approach.name]))
                    continue
                job = make_job(approach, versions[approach.name], fault, seed, spec)
                current.append(job.key)
                jobs_by_fault.setdefault(fault.id, []).append(job.key)
                ledger.add(job.key, spec.name, approach.name, job.version, fault.id, seed, approach.params,
                           levels[approach.name])
                if ledger.state(job.key) != "done":
                    jobs.append(job)
    # Results and reports show these jobs, not rows an earlier version of the spec left here.
    tables.record_current_jobs(spec.name, current)
    for name, reason in unavailable.items():
        console.print(f"[red]{name} could not be started; its jobs are TOOL_ERROR:[/] {reason.splitlines()[0]}")
    total = len(spec.approaches) * len(faults) * len(spec.seeds)
    console.print(f"{total} jobs, {total - len(jobs)} already done, {len(jobs)} to run")
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stage]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("all", total=len(jobs), stage="")
        per = {a.name: progress.add_task(a.name, total=sum(j.approach.name == a.name for j in jobs), stage="")
               for a in spec.approaches}

        def on_progress(job, fraction, stage):
            progress.update(per[job.approach.name], stage=f"{job.fault.id} s{job.seed}: {stage} {max(fraction, 0):.0%}")

        def on_done(job, outcome):
            progress.advance(per[job.approach.name])
            progress.advance(overall)
            progress.update(per[job.approach.name], stage=f"last: {outcome.status}")

        scheduler.on_progress, scheduler.on_done = on_progress, on_done
        warming = asyncio.create_task(warm_evaluator(addresses.evaluator, jobs))
        try:
            await scheduler.run(jobs)
        finally:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
        if wants_phase(spec):
            await _robustness_phase(spec, faults, ledger, tables, addresses, progress, jobs_by_fault)


async def warm_evaluator(address: str, jobs: list[Job]) -> None:
    """Scores each fault's original model on its test split once, while the first repairs
    run: the evaluator keeps those scores, the parsed split and the fetched blobs by digest,
    so the first job of every fault does not wait for them after its repair (they were
    most of its Evaluate). Best effort: a failure here is left for the job's own Evaluate
    to report as it always has."""
    faults = list({job.fault.id: job.fault for job in jobs}.values())
    if not address or not faults:
        return
    client = EvaluatorClient(address)
    try:
        for fault in faults:
            try:
                await client.evaluate(f"warm-up {fault.id}", fault, Digest(), 0, ["accuracy"], {}, timeout=600,
                                      what="warm-up Evaluate")
            except (InfraFailure, EvaluationRefused) as exc:
                log.debug("evaluator warm-up for %s: %s", fault.id, exc)
    finally:
        await client.close()


def record_unavailable(ledger, spec, approach, fault, seed, reason: str) -> str:
    """A job of an approach whose service could not be started (its environment would not
    build): TOOL_ERROR with the reason, charged to the approach (its requirements), under a
    key of its own so that a later run with a working environment runs the job anew."""
    job = make_job(approach, "unavailable", fault, seed, spec)
    ledger.add(job.key, spec.name, approach.name, job.version, fault.id, seed, approach.params)
    ledger.finish(job.key, "TOOL_ERROR", f"the service could not be started: {reason}", {}, {})
    return job.key


async def _robustness_phase(spec, faults, ledger, tables, addresses, progress, jobs_by_fault) -> None:
    task = progress.add_task("robustness", total=None, stage="common inputs of every model")
    phase = RobustnessPhase(spec, ledger, tables, addresses.evaluator,
                            on_done=lambda key, message: progress.advance(task))
    todo, _ = phase.plan(faults, jobs_by_fault)
    progress.update(task, total=len(todo), stage=f"PGD on the common inputs, {len(todo)} model(s)")
    report = await phase.run(faults, jobs_by_fault)
    stage = f"{report.evaluated} evaluated, {report.already_done} already done"
    if report.waiting_faults:
        stage += f"; waiting for phase 1 on {', '.join(report.waiting_faults)}"
    if report.left_pending:
        stage += f"; {report.left_pending} left pending (infrastructure errors or refusals; see the log)"
    progress.update(task, stage=stage)
