"""Fault suites and their content-addressed build cache. A fault is rebuilt only when its
build key (builder, dataset, architecture, seed, scale, overrides, causes, operator, code
version) changes; a fault is built in a temporary folder and renamed into place, so a killed
build leaves nothing half-written behind.

Suites:
- quick: the MNIST / LeNet-5 misclassification fault (CI's quick study);
- quick-recipe: one tiny training-recipe fault (LeNet-5 with a learning rate far too high);
- you2026: You et al.'s five subjects plus the tabular fairness subjects, some with injected
  causes;
- kim2023: Kim et al.'s 30 training-recipe faults — 9 DeepFD real-fault analogues (D1–D9) and
  21 DeepCrime mutants on MNIST (M1–3), CIFAR-10-like (C1–3), Reuters-like (R1–7) and the
  UnityEyes stand-in (U1–8, gaze directions binned; see `fixbench.data.standins.eyes`). Operators and
  candidate values were chosen so that small-scale builds kill them (measured at scale 0.2).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

from fixbench.faults.bundle import Fault, FaultError
from fixbench.faults.errors import MutantNotKilled, SuiteBuildError, UnknownFaultError, UnknownSuiteError
from fixbench.faults.fault_spec import BUILDER_VERSIONS, BuildProgress, FaultRecipe
from fixbench.faults.manifest import write_manifest


def __getattr__(name: str):
    """The builders import torch and the zoo; they are loaded when a fault is built, so that
    finding cached suites (every resumed or finished study) does not import them."""
    if name == "build_misclassification_fault":
        from fixbench.faults.misclassification import build_misclassification_fault as builder
    elif name == "build_recipe_fault":
        from fixbench.faults.recipe_faults import build_recipe_fault as builder
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = builder
    return builder


def _builder(name: str):
    return globals().get(name) or __getattr__(name)  # a monkeypatched builder wins


# Beside a fault's bundle folder: the remembered verdict that its mutant is not killed.
DROPPED_SUFFIX = ".dropped.json"

__all__ = [
    "BUILDER_VERSIONS",
    "SUITES",
    "SuiteBuildError",
    "FaultRecipe",
    "UnknownFaultError",
    "UnknownSuiteError",
    "ensure_fault",
    "ensure_suite",
    "find_recipe",
    "list_suites",
    "suite_recipes",
]

MIS, REC = "misclassification", "training_recipe"
MNIST_LENET5 = FaultRecipe(
    "mnist-lenet5",
    MIS,
    "mnist5000",
    "lenet5",
    seed=0,
    description="LeNet-5 trained on the 5,000 real MNIST digits; fix the repair inputs it misclassifies",
)


def _you2026() -> list[FaultRecipe]:
    def mis(fid: str, dataset: str, arch: str, description: str, **kw) -> FaultRecipe:
        return FaultRecipe(fid, MIS, dataset, arch, seed=0, description=description, **kw)

    return [
        MNIST_LENET5,
        mis(
            "utkface-facenet",
            "utkface-standin",
            "facenet",
            "FaceNet-style CNN on UTKFace-like faces (gender task, race groups)",
        ),
        mis("cifar10-vgg16", "cifar10-standin", "vgg16", "VGG-16-style CNN on CIFAR-10-like images"),
        mis(
            "cifar10s-resnet18",
            "cifar10s-standin",
            "resnet18",
            "ResNet-18 on CIFAR-10S-like images (half grey, colour skewed per class in train)",
        ),
        mis(
            "imagenet-densenet121",
            "imagenet-standin",
            "densenet121",
            "DenseNet-121-style CNN on ImageNet-like images (20 classes, 32x32)",
            # The study's ImageNet model is pretrained: it comes without a training history.
            history_epochs=0,
        ),
        mis(
            "adult-mlp",
            "adult",
            "mlp",
            "MLP on Adult income; the female group under-represented in train",
            causes={"group_imbalance": 0.6},
        ),
        mis(
            "compas-mlp",
            "compas",
            "mlp",
            "MLP on COMPAS recidivism; the Caucasian group under-represented in train",
            causes={"group_imbalance": 0.6, "minority_groups": [1]},
        ),
        mis(
            "german-mlp",
            "german",
            "mlp",
            "MLP on German credit; the under-25 group under-represented, noisy labels",
            causes={"group_imbalance": 0.6, "minority_groups": [0], "label_noise": 0.1},
        ),
        mis(
            "mnist-lenet5-imbalance",
            "mnist5000",
            "lenet5",
            "LeNet-5 on MNIST with digits 0-4 mostly missing from training (class imbalance)",
            causes={"class_imbalance": 0.9},
        ),
        mis(
            "mnist-lenet5-noisy",
            "mnist5000",
            "lenet5",
            "LeNet-5 on MNIST trained on 40 % wrong labels",
            causes={"label_noise": 0.4},
        ),
    ]


def _kim2023() -> list[FaultRecipe]:
    mnist = ("mnist5000", "lenet5", {"epochs": 5})
    # VGG-style (the VGG-11 configuration at the zoo's CPU width): VGG-16's depth does not
    # learn from the ~760 training images of a small-scale build.
    cifar = ("cifar10-standin", "vgg16", {"epochs": 8, "options": {"depth": "11"}})
    reuters = ("reuters-standin", "textmlp", {})
    # LeNet-5-sized CNN on the eye crops: a FaceNet-style CNN does not learn the few hundred
    # crops of a small-scale build in a CPU-minute; normalisation on, so D5 has one to remove.
    eyes = ("unityeyes-standin", "lenet5", {"epochs": 6, "normalize_input": True})

    def rec(
        fid: str, subject: tuple, operator: str, *candidates: dict, overrides: dict | None = None, description: str = ""
    ) -> FaultRecipe:
        dataset, arch, base = subject
        return FaultRecipe(
            fid,
            REC,
            dataset,
            arch,
            seed=0,
            overrides={**base, **(overrides or {})},
            operator=operator,
            candidates=tuple(candidates),
            description=description,
        )

    return [
        # Nine real-fault analogues (DeepFD style); the fix is the unmutated recipe.
        rec(
            "kim-d1",
            mnist,
            "D1",
            {"loss": "mean_absolute_error"},
            {"loss": "mean_absolute_percentage_error"},
            description="D1: regression loss (MAE) for a 10-class task",
        ),
        rec("kim-d2", cifar, "D2", {}, description="D2: the output layer keeps ReLU instead of softmax"),
        rec("kim-d3", mnist, "D3", {}, description="D3: softmax applied twice on the output"),
        rec("kim-d4", eyes, "D4", {"factor": 100.0}, {"factor": 1000.0}, description="D4: learning rate far too high"),
        rec(
            "kim-d5",
            eyes,
            "D5",
            {},
            description="D5: low-contrast eye crops fed without input normalisation",
        ),
        rec("kim-d6", mnist, "D6", {}, description="D6: sigmoid output for 10 exclusive digits"),
        rec("kim-d7", cifar, "D7", {"epochs": 1}, description="D7: training stopped after one epoch"),
        rec("kim-d8", mnist, "D8", {}, description="D8: every weight initialised to zero"),
        rec(
            "kim-d9",
            reuters,
            "D9",
            {"optimizer": "sgd"},
            {"optimizer": "adadelta"},
            description="D9: plain SGD left at Adam's learning rate 1e-3",
        ),
        # 21 DeepCrime mutants.
        rec("kim-m1", mnist, "ACH", {"activation": "sigmoid"}, {"activation": "exponential"}),
        rec("kim-m2", mnist, "HLR", {"factor": 30.0}, {"factor": 100.0}),
        rec("kim-m3", mnist, "OCH", {"optimizer": "adadelta"}, {"optimizer": "sgd"}),
        rec("kim-c1", cifar, "WCI", {"initializer": "ones"}, {"initializer": "zeros"}),
        rec("kim-c2", cifar, "HNE", {"factor": 0.25}, {"factor": 0.125}),
        rec("kim-c3", cifar, "OCH", {"optimizer": "adadelta"}, {"optimizer": "sgd"}),
        rec("kim-r1", reuters, "ACH", {"activation": "exponential"}, {"activation": "sigmoid"}),
        rec("kim-r2", reuters, "AAL", {"activation": "softmax"}),
        rec("kim-r3", reuters, "HBS", {"batch_size": 512}),
        rec("kim-r4", reuters, "RAW", {"regularizer": "l2", "weight": 0.01}, {"regularizer": "l1", "weight": 0.01}),
        rec("kim-r5", reuters, "RCD", {"dropout": 0.95}),
        rec("kim-r6", reuters, "TCL", {"fraction": 0.4}, {"fraction": 0.6}),
        rec("kim-r7", reuters, "TUD", {"fraction": 0.9}),
        # ARM (activations removed) is not in the suite: on every subject here the linear
        # model trains as well as the original at small scale (measured), so it is never killed.
        rec("kim-u1", eyes, "HBS", {"batch_size": 512}),
        rec("kim-u2", eyes, "ACH", {"activation": "sigmoid"}, {"activation": "exponential"}),
        rec("kim-u3", eyes, "HLR", {"factor": 0.01}, {"factor": 0.001}),
        rec("kim-u4", eyes, "WCI", {"initializer": "zeros"}, {"initializer": "ones"}),
        rec("kim-u5", eyes, "LCH", {"loss": "hinge"}, {"loss": "mean_absolute_percentage_error"}),
        rec("kim-u6", eyes, "OCH", {"optimizer": "sgd"}, {"optimizer": "adadelta"}),
        rec("kim-u7", eyes, "TRD", {"fraction": 0.8}, {"fraction": 0.95}),
        rec("kim-u8", eyes, "HNE", {"epochs": 1}),
    ]


SUITES: dict[str, list[FaultRecipe]] = {
    "quick": [MNIST_LENET5],
    # Scaled down on its own (scale_factor) so that it builds in seconds inside the quick study.
    "quick-recipe": [
        FaultRecipe(
            "mnist-lenet5-hlr",
            REC,
            "mnist5000",
            "lenet5",
            seed=0,
            overrides={"epochs": 4},
            operator="HLR",
            candidates=({"factor": 100.0},),
            scale_factor=0.2,
            description="LeNet-5 on MNIST with a learning rate 100x too high (Adam at 0.1)",
        ),
    ],
    "you2026": _you2026(),
    "kim2023": _kim2023(),
}


def list_suites() -> list[str]:
    """Names of every suite, sorted."""
    return sorted(SUITES)


def suite_recipes(name: str) -> list[FaultRecipe]:
    """The fault recipes of suite `name`; unknown names raise `UnknownSuiteError`."""
    if name not in SUITES:
        raise UnknownSuiteError(f"unknown fault suite {name!r}; known: {', '.join(list_suites())}")
    return SUITES[name]


def find_recipe(fault_id: str) -> FaultRecipe:
    """The recipe of fault `fault_id` in any suite; unknown ids raise `UnknownFaultError`."""
    for recipes in SUITES.values():
        for recipe in recipes:
            if recipe.id == fault_id:
                return recipe
    known = sorted({r.id for recipes in SUITES.values() for r in recipes})
    raise UnknownFaultError(f"unknown fault {fault_id!r}; known: {', '.join(known)}")


def _build(recipe: FaultRecipe, root: Path, scale: float, progress: BuildProgress | None) -> Fault:
    import torch

    # Multi-threaded kernels sum in a thread-count-dependent order, so the trained bytes would
    # depend on the machine's cores; one thread keeps "same build key → same bytes" true
    # everywhere (and the benchmark's tiny models gain nothing from more threads).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build_with_builder(recipe, root, scale, progress)
    finally:
        torch.set_num_threads(before)


def _build_with_builder(recipe: FaultRecipe, root: Path, scale: float, progress: BuildProgress | None) -> Fault:
    if recipe.family == "misclassification":
        return _builder("build_misclassification_fault")(
            recipe.id,
            recipe.dataset,
            recipe.architecture,
            root,
            recipe.seed,
            scale,
            recipe.overrides,
            recipe.description,
            progress,
            recipe.causes,
            recipe.effective_history_epochs(),
        )
    if recipe.family == "training_recipe":
        return _builder("build_recipe_fault")(recipe, root, scale, progress)
    raise FaultError(f"fault {recipe.id}: no builder for family {recipe.family!r}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_builds(tmp_root: Path) -> None:
    """Deletes temporary build folders whose building process is gone (a SIGKILL skips the
    clean-up of `ensure_fault`); folders of live builds, here or in other processes, stay."""
    if not tmp_root.is_dir():
        return
    for folder in tmp_root.iterdir():
        parts = folder.name.rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            shutil.rmtree(folder, ignore_errors=True)


def ensure_fault(
    recipe: FaultRecipe, bench_dir: str | Path, scale: float = 1.0, progress: BuildProgress | None = None
) -> Fault:
    """The built fault from the cache, building it first when absent."""
    bench = Path(bench_dir)
    final = bench / "faults" / f"{recipe.id}@{recipe.build_key(scale)}"
    if (final / "fault.json").exists():
        return Fault.load(final)
    # A mutant found not killed at this build key stays not killed (the build is
    # deterministic): the verdict is remembered instead of retraining every repeat.
    verdict = final.with_name(final.name + DROPPED_SUFFIX)
    if verdict.exists():
        raise MutantNotKilled(json.loads(verdict.read_text())["reason"])
    _remove_stale_builds(bench / "tmp")
    # The builder's pid in the name lets a later build tell a dead build's leftovers apart.
    tmp = bench / "tmp" / f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            _build(recipe, tmp, recipe.effective_scale(scale), progress)
        except MutantNotKilled as exc:
            verdict.parent.mkdir(parents=True, exist_ok=True)
            part = verdict.with_name(f".{verdict.name}.{os.getpid()}")
            part.write_text(json.dumps({"id": recipe.id, "reason": str(exc)}) + "\n")
            part.replace(verdict)
            raise
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp)
        else:
            try:
                tmp.rename(final)
            except OSError:
                if not final.exists():
                    raise
                # another process renamed its build into place between the check and ours
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        # The tmp folder itself goes once no other build is using it.
        try:
            tmp.parent.rmdir()
        except OSError:
            pass
    return Fault.load(final)


def ensure_suite(
    name: str,
    bench_dir: str | Path,
    scale: float = 1.0,
    on_fault: Callable[[FaultRecipe, int, int], None] | None = None,
    progress: Callable[[FaultRecipe, float, str], None] | None = None,
    keep_going: bool = False,
    only: Collection[str] | None = None,
) -> list[Fault]:
    """Every fault of suite `name` (built when not cached), then the suite's manifest
    `<bench>/<name>@<scale>.manifest.json`. `on_fault(recipe, index, count)` is called before
    each fault; `progress(recipe, fraction, text)` while one builds.

    A fault that cannot be built stops the build, or, with `keep_going`, is reported with all
    the others in one `SuiteBuildError` after every other fault has been built (and cached);
    the manifest is written only for a complete suite.

    A mutant that is not statistically killed at this scale (`MutantNotKilled`) is no build
    failure: it is dropped, listed with its reason under "dropped" in the manifest, and the
    rest of the suite is used (so every scale builds). `only`: build just these fault ids
    (a study that names its faults); no manifest is written for such a partial build.
    """
    recipes = suite_recipes(name)
    if only is not None:
        unknown = sorted(set(only) - {r.id for r in recipes})
        if unknown:
            raise UnknownFaultError(f"faults {unknown} are not in suite {name!r}; it has {[r.id for r in recipes]}")
        recipes = [r for r in recipes if r.id in set(only)]
    faults = []
    dropped: list[dict[str, str]] = []
    failures: list[tuple[str, Exception]] = []
    for i, recipe in enumerate(recipes):
        if on_fault:
            on_fault(recipe, i, len(recipes))
        report = None
        if progress is not None:

            def report(fraction: float, text: str, _recipe: FaultRecipe = recipe) -> None:
                progress(_recipe, fraction, text)

        try:
            faults.append(ensure_fault(recipe, bench_dir, scale, report))
        except MutantNotKilled as exc:
            dropped.append({"id": recipe.id, "reason": str(exc)})
        except Exception as exc:
            if not keep_going:
                raise
            failures.append((recipe.id, exc))
    if failures:
        details = "; ".join(f"{fid}: {type(exc).__name__}: {exc}" for fid, exc in failures)
        raise SuiteBuildError(
            f"suite {name!r} at scale {scale:g}: {len(failures)} of {len(recipes)} faults failed ({details})", failures
        )
    if not faults:
        raise SuiteBuildError(f"suite {name!r} at scale {scale:g}: no fault could be built "
                              f"({'; '.join(d['id'] + ': ' + d['reason'] for d in dropped)})",
                              [(d["id"], MutantNotKilled(d["reason"])) for d in dropped])
    if only is None:
        write_manifest(bench_dir, name, scale, faults, dropped)
    return faults
