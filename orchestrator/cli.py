"""The `fixbench` command line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fixbench: compare deep-learning model-fixing approaches side by side.")
study_app = typer.Typer(no_args_is_help=True, help="Run studies and read their results.")
bench_app = typer.Typer(no_args_is_help=True, help="Build and inspect the fault benchmark.")
app.add_typer(study_app, name="study")
deploy_app = typer.Typer(no_args_is_help=True, help="Deployment files derived from services/*/service.toml.")
app.add_typer(bench_app, name="bench")
app.add_typer(deploy_app, name="deploy")
console = Console(width=None if sys.stdout.isatty() else 160)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@study_app.command("run")
def study_run(spec_path: Path = typer.Argument(..., help="study spec, e.g. studies/quick.yaml"),
              out: Path | None = typer.Option(None, help="results folder (default results/<study name>)"),
              bench: Path = typer.Option(Path(".fixbench/bench"), help="fault benchmark cache"),
              threads: int = typer.Option(1, help="CPU threads per service process"),
              runtime: str | None = typer.Option(None, help="local (start services here), external (addresses from FIXBENCH_* env) or docker (start containers through the Docker SDK)"),
              image_tag: str | None = typer.Option(None, help="tag of the fixbench/* images for --runtime docker (default $FIXBENCH_TAG or latest)"),
              scale: str | None = typer.Option(None, help="dataset fraction (or tiny / small / medium / full) overriding the spec's scale"),
              set_: list[str] = typer.Option([], "--set", help="override a spec key, validated like the file (repeatable): "
                                                             "--set seeds=[0,1,2,3] --set approaches.finetune.params.epochs=4")) -> None:
    """Run (or resume) a study: every approach × fault × seed."""
    from orchestrator.runtime_docker import DockerRuntimeError
    from orchestrator.spec import SpecError, load_spec
    from orchestrator.study import StudyError, run_study, with_scale

    try:
        spec = load_spec(spec_path, set_)
        if scale is not None:
            spec = with_scale(spec, scale)
    except SpecError as exc:
        _fail(str(exc))
    try:
        pending = run_study(spec, out or Path("results") / spec.name, bench, console, threads, runtime, image_tag)
    except (StudyError, DockerRuntimeError, KeyError, ValueError, TimeoutError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: in-flight jobs were released; run the same command again to resume[/]")
        raise typer.Exit(130) from None
    if pending:
        raise typer.Exit(1)


@study_app.command("status")
def study_status(out: Path = typer.Argument(..., help="results folder of a study")) -> None:
    """Job counts of a study from its ledger (safe while the study runs)."""
    from orchestrator.ledger import Ledger
    from orchestrator.results import print_summary, results_frame

    path = out / "ledger.sqlite"
    if not path.exists():
        _fail(f"no ledger at {path}")
    ledger = Ledger(path)
    counts = ledger.counts()
    console.print("jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    studies = {r["study"] for r in ledger.rows()}
    for study in sorted(studies):
        print_summary(results_frame(ledger, study), f"study {study}", console)
    ledger.close()


@study_app.command("report")
def study_report(out: Path = typer.Argument(..., help="results folder of a study (holds ledger.sqlite)"),
                 study: str | None = typer.Option(None, help="study name, when the ledger holds several")) -> None:
    """Rebuild results.csv/.parquet, tables.txt/.md and report.html from the ledger alone."""
    from orchestrator.report import ReportError, rebuild

    try:
        written = rebuild(out, study)
    except ReportError as exc:
        _fail(str(exc))
    for name, path in written.items():
        console.print(f"{name}: {path}")


@study_app.command("merge")
def study_merge(parts: list[Path] = typer.Argument(..., help="results folders of the parts (two or more)"),
                out: Path = typer.Option(..., "--out", help="a new results folder for the merged study"),
                study: str | None = typer.Option(None, help="study name, when the ledgers hold several")) -> None:
    """Merge the parts of one study, run apart (each on some of its faults: --set 'faults=[...]'),
    into one results folder and rebuild its report; a fault built differently in two parts is refused."""
    from orchestrator.merge import MergeError, merge_parts
    from orchestrator.report import ReportError, rebuild

    try:
        counts = merge_parts(parts, out, study)
        written = rebuild(out, study)
    except (MergeError, ReportError) as exc:
        _fail(str(exc))
    console.print("merged: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for name, path in written.items():
        console.print(f"{name}: {path}")


@study_app.command("leaderboard")
def study_leaderboard(folder: Path = typer.Argument(Path("results"), help="a folder holding several studies' results")) -> None:
    """Write FOLDER/leaderboard.html comparing the approaches across the studies in FOLDER."""
    from orchestrator.leaderboard import write_leaderboard

    page = write_leaderboard(folder)
    if page is None:
        _fail(f"{folder} holds fewer than two studies' results (each a folder with results.parquet)")
    console.print(f"leaderboard: {page}")


@study_app.command("mlflow")
def study_mlflow(out: Path = typer.Argument(..., help="results folder of a study (holds results.parquet)"),
                 uri: str | None = typer.Option(None, help="MLflow tracking URI (default: a local store in OUT/mlruns)"),
                 experiment: str | None = typer.Option(None, help="experiment name (default fixbench-<study>)")) -> None:
    """Export every job of a study as an MLflow run: params, metrics, status, the repaired ONNX."""
    from fixbench.results import ResultsError
    from fixbench.tracking import TrackingError, export_mlflow

    try:
        written = export_mlflow(out, uri, experiment)
    except (ResultsError, TrackingError) as exc:
        _fail(str(exc))
    console.print(f"{written} run(s) written to {uri or (out / 'mlruns')}")


@app.command("approaches")
def approaches(threads: int = typer.Option(1, help="CPU threads per service process")) -> None:
    """List the approach services with their Describe info (starts each one locally)."""
    import tempfile

    from fixbench.v1 import repair_pb2
    from orchestrator.runtime_local import LocalRuntime
    from orchestrator.scheduler import Scheduler
    from orchestrator.spec import available_approaches

    names = available_approaches()
    with tempfile.TemporaryDirectory() as tmp, LocalRuntime(tmp, threads) as runtime:
        addresses = runtime.start({n: 1 for n in names})

        async def describe_all():
            sched = Scheduler.__new__(Scheduler)
            sched.approach_addresses, sched._channels = addresses.approaches, {}
            try:
                return [await sched.describe(n) for n in names]
            finally:
                await sched.close()

        infos = asyncio.run(describe_all())
    table = Table(title="fixbench approaches")
    for col in ("name", "version", "level", "fault families", "needs", "parameters", "provider", "summary"):
        table.add_column(col)
    for info in infos:
        table.add_row(
            info.name, info.version, repair_pb2.RepairLevel.Name(info.level).removeprefix("REPAIR_LEVEL_").lower(),
            ", ".join(info.fault_families),
            ", ".join(repair_pb2.Need.Name(n).removeprefix("NEED_").lower() for n in info.needs),
            ", ".join(f"{p.name}={p.default_json}" for p in info.parameters),
            info.execution_provider + (f" / torch {info.torch_device}" if info.torch_device else ""), info.summary,
        )
    console.print(table)


@bench_app.command("build")
def bench_build(suite: str = typer.Argument(..., help="fault suite: quick, quick-recipe, you2026, kim2023"),
                scale: str = typer.Option("1.0", help="fraction of each dataset, or tiny / small / medium / full"),
                bench: Path = typer.Option(Path(".fixbench/bench"), help="fault benchmark cache")) -> None:
    """Build (or load from the cache) every fault of a suite and write its manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fixbench.data import DatasetError
    from fixbench.faults import FaultError, OperatorNotApplicable, ensure_suite, parse_scale, suite_recipes
    from fixbench.faults.manifest import manifest_path
    from fixbench.faults.suites import UnknownSuiteError

    try:
        value = parse_scale(scale)
        count = len(suite_recipes(suite))
    except (UnknownSuiteError, ValueError) as exc:
        _fail(str(exc))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        overall = bar.add_task(f"{suite}@{value:g}", total=count)
        current = bar.add_task("", total=100)

        def on_fault(recipe, index: int, total: int) -> None:
            bar.update(overall, completed=index)
            bar.reset(current, total=100, description=f"  {recipe.id}")

        def on_progress(recipe, fraction: float, text: str) -> None:
            bar.update(current, completed=round(100 * fraction), description=f"  {recipe.id}: {text}")

        try:
            faults = ensure_suite(suite, bench, value, on_fault=on_fault, progress=on_progress, keep_going=True)
        except (FaultError, OperatorNotApplicable, DatasetError, KeyError, ValueError) as exc:
            _fail(str(exc))
        bar.update(overall, completed=count)
        bar.update(current, completed=100, description="  done")
    for f in faults:
        console.print(f"{f.id}: {f.family}, {f.dataset}/{f.architecture}"
                      + (f", {f.operator}" if f.operator else "")
                      + f", test acc {f.metrics.get('test_accuracy', 0):.2f} %, train {f.train_seconds:.1f} s, {f.root}")
    from fixbench.faults.manifest import read_manifest

    for d in read_manifest(manifest_path(bench, suite, value)).get("dropped", []):
        console.print(f"[yellow]{d['id']}: dropped at this scale: {d['reason'][:300]}[/]")
    console.print(f"manifest: {manifest_path(bench, suite, value)}")


@bench_app.command("list")
def bench_list(bench: Path = typer.Option(Path(".fixbench/bench"), help="fault benchmark cache")) -> None:
    """List the suites and the faults built in the cache."""
    from fixbench.faults import list_suites, suite_recipes
    from fixbench.faults.manifest import list_manifests, read_manifest

    suites = Table(title="fault suites")
    for column in ("suite", "faults", "families", "built at scales"):
        suites.add_column(column)
    built: dict[str, list[str]] = {}
    for path in list_manifests(bench):
        data = read_manifest(path)
        built.setdefault(str(data.get("suite")), []).append(f"{data.get('scale'):g}")
    for name in list_suites():
        recipes = suite_recipes(name)
        families = sorted({r.family for r in recipes})
        suites.add_row(name, str(len(recipes)), ", ".join(families), ", ".join(built.get(name, [])) or "-")
    console.print(suites)
    table = Table(title=f"built faults in {bench}")
    for column in ("suite@scale", "id", "family", "dataset / model", "operator", "test acc %", "train s"):
        table.add_column(column)
    for path in list_manifests(bench):
        data = read_manifest(path)
        for e in data["faults"]:
            table.add_row(f"{data.get('suite')}@{data.get('scale'):g}", e["id"], e["family"],
                          f"{e['dataset']} / {e['architecture']}", e.get("operator") or "-",
                          f"{e.get('metrics', {}).get('test_accuracy', float('nan')):.2f}", f"{e['train_seconds']:.1f}")
    if table.row_count:
        console.print(table)
    else:
        console.print(f"no suite built in {bench} yet: run `fixbench bench build SUITE`")


@bench_app.command("show")
def bench_show(fault_id: str = typer.Argument(..., help="fault id, e.g. mnist-lenet5"),
               bench: Path = typer.Option(Path(".fixbench/bench"), help="fault benchmark cache")) -> None:
    """Show one built fault's manifest entry (every suite@scale that holds it)."""
    import json

    from rich.syntax import Syntax

    from fixbench.faults import FaultError, UnknownFaultError
    from fixbench.faults.manifest import find_fault_entry

    try:
        entries = find_fault_entry(bench, fault_id)
    except (UnknownFaultError, FaultError) as exc:
        _fail(str(exc))
    for entry in entries:
        console.print(Syntax(json.dumps(entry, indent=2, sort_keys=True), "json", word_wrap=True))


@app.command("conformance")
def conformance(address: str | None = typer.Argument(None, help="address of a running Repair service, e.g. 127.0.0.1:50061"),
                store: str | None = typer.Option(None, help="the artifact store that service reads from (required with ADDRESS)"),
                service: Path | None = typer.Option(None, help="a service folder to start here with its own store instead"),
                param: list[str] = typer.Option([], help="approach parameter name=value for every Fix (repeatable)"),
                budget: float = typer.Option(60.0, help="wall budget of the full Fix runs, seconds"),
                grace: float = typer.Option(15.0, help="how far past a budget a result may come, seconds"),
                max_trials: int = typer.Option(0, min=0, help="cap on a search approach's trials in each Fix (0: none)"),
                threads: int = typer.Option(1, min=1, help="CPU threads of a service started with --service")) -> None:
    """Check a Repair service against the contract (Describe, Check, Fix streaming, cancellation, budget, bad inputs)."""
    from fixbench.conformance import LaunchError
    from orchestrator.cli_scaffold import ScaffoldError, conformance_cli

    try:
        code = conformance_cli(console, address, store, service, param, budget, grace, threads, max_trials)
    except (ScaffoldError, LaunchError) as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command("new-approach")
def new_approach(name: str = typer.Argument(..., help="lower-case slug, e.g. my-fix"),
                 level: str = typer.Option("neuron", help="baseline, model, layer, neuron or recipe"),
                 dir: Path = typer.Option(Path("services"), "--dir", help="folder to create the service in"),
                 wrap: str = typer.Option(None, "--wrap", help="git URL or path of an original tool to wrap"),
                 framework: str = typer.Option("onnx", help="the wrapped tool's model format: keras, torch or onnx"),
                 commit: str = typer.Option("", help="the wrapped tool's commit (default: its HEAD at build time)"),
                 entry: str = typer.Option(None, help="the wrapped tool's command, with {model} {data} {output} ...")) -> None:
    """Scaffold services/NAME from services/_template (a working last-layer refit that passes the conformance suite),
    or with --wrap from services/_template_wrap (the original tool installed from its repository and run as is)."""
    from fixbench.catalog import ManifestError
    from orchestrator.cli_scaffold import ScaffoldError
    from orchestrator.cli_scaffold import new_approach as scaffold
    from orchestrator.deploy_render import RenderError

    try:
        if wrap:
            from orchestrator.cli_scaffold import DEFAULT_WRAP_ENTRY, new_wrapped_approach

            folder = new_wrapped_approach(name, wrap, framework, commit, entry or DEFAULT_WRAP_ENTRY,
                                          level=level, dest=dir)
        else:
            folder = scaffold(name, level, dir)
    except ScaffoldError as exc:
        _fail(str(exc))
    try:
        rendered = _render_if_in_repo(folder)
    except (ManifestError, RenderError) as exc:
        console.print(f"[yellow]created {folder}, but the deployments were not rendered:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"created {folder}: edit approach.py, then `fixbench conformance --service {folder}`"
                  + (f"; rendered {', '.join(rendered)}" if rendered else ""))


def _render_if_in_repo(folder: Path) -> list[str]:
    """A service created in this repository's services/ joins every deployment at once."""
    from orchestrator.deploy_render import write_rendered
    from orchestrator.spec import REPO_ROOT, SERVICES_DIR

    if folder.resolve().parent != SERVICES_DIR.resolve():
        return []
    return [str(p.relative_to(REPO_ROOT)) for p in write_rendered(REPO_ROOT)]


@deploy_app.command("render")
def deploy_render(check: bool = typer.Option(False, "--check", help="only report files that differ from a fresh render (exit 1)")) -> None:
    """Render compose.yaml, deploy/compose.gpu.yaml, the Swarm stack and the Kubernetes approaches from services/*/service.toml."""
    from fixbench.catalog import ManifestError
    from orchestrator.deploy_render import RenderError, stale_files, write_rendered
    from orchestrator.spec import REPO_ROOT

    try:
        if check:
            stale = stale_files(REPO_ROOT)
            for path in stale:
                console.print(f"stale: {path.relative_to(REPO_ROOT)}")
            if stale:
                _fail("deployment files differ from services/*/service.toml: run `fixbench deploy render`", 1)
            console.print("every deployment file matches a fresh render")
            return
        written = write_rendered(REPO_ROOT)
    except (ManifestError, RenderError) as exc:
        _fail(str(exc))
    console.print("\n".join(f"rendered {p.relative_to(REPO_ROOT)}" for p in written) or "nothing to render: up to date")


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
