"""Arachne: graph analysis, localisation, DE search, determinism, torch-free imports, service."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.services.loading import service_module

ROOT = Path(__file__).resolve().parents[2]
ARACHNE_DIR = ROOT / "services" / "arachne"
for path in (str(ARACHNE_DIR), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import arachne_repair as ar  # noqa: E402

CORRUPT = ("w2", (0, 2))  # the last-layer weight the tests break: input unit 0 -> class 2


# ---- tiny models built directly in ONNX -----------------------------------------------
def _dense_net(v: np.ndarray, corrupt: float = 0.0, softmax: bool = True) -> onnx.ModelProto:
    """x (N,4) -> Gemm(transB=1, torch layout) -> Relu -> MatMul+Add -> [Softmax].

    The hidden layer computes (relu(x), relu(-x)) and the last layer [V; -V], so the net
    outputs x @ V exactly and classifies every argmax(x @ V) label correctly. `corrupt`
    is added to the last-layer weight from hidden unit 0 to class 2."""
    d, c = v.shape
    w1 = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32)  # (8, 4): stored (out, in)
    w2 = np.concatenate([v, -v]).astype(np.float32)  # (8, 3): (in, out)
    w2[CORRUPT[1]] += corrupt
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h_pre"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h_pre"], ["h"], name="relu1"),
        helper.make_node("MatMul", ["h", "w2"], ["mm"], name="fc2_mm"),
        helper.make_node("Add", ["mm", "b2"], ["logits" if softmax else "y"], name="fc2_add"),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(np.zeros(2 * d, np.float32), "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.zeros(c, np.float32), "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _conv_net() -> onnx.ModelProto:
    w = np.ones((3, 1, 4, 4), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        "convtail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 1, 1])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _sequence_net() -> onnx.ModelProto:
    """x (N, 2, 4) -> MatMul: a dense layer applied per time step, so the tail input is not flat."""
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def data():
    """A synthetic 3-class set with clear margins, labelled by argmax(x @ V)."""
    rng = np.random.default_rng(7)
    v = rng.normal(size=(4, 3)).astype(np.float32)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    logits = x @ v
    top2 = np.sort(logits, axis=1)[:, -2:]
    keep = (top2[:, 1] - top2[:, 0]) > 0.3
    x = x[keep][:300]
    return v, x, (x @ v).argmax(axis=1).astype(np.int64)


def _predict(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0].argmax(axis=1)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


FAST = dict(pop_size=30, generations=60, patience=15)


# ---- graph analysis ---------------------------------------------------------------------
def test_clean_net_is_perfect_and_corruption_makes_failures(data):
    v, x, y = data
    assert (_predict(_dense_net(v), x) == y).all()
    failing = (_predict(_dense_net(v, corrupt=6.0), x) != y).sum()
    assert 10 <= failing < len(y) // 2


def test_find_dense_tail_reads_gemm_and_matmul_add(data):
    v, _, _ = data
    tail = ar.find_dense_tail(_dense_net(v), layers=2)
    assert tail.output_ops == ("softmax",)
    first, last = tail.layers
    assert (first.weight, first.transposed, first.activation, first.input) == ("w1", True, "relu", "x")
    assert (last.weight, last.bias, last.transposed, last.activation, last.input) == (
        "w2",
        "b2",
        False,
        "identity",
        "h",
    )
    one = ar.find_dense_tail(_dense_net(v, softmax=False), layers=1)
    assert [layer.weight for layer in one.layers] == ["w2"] and one.output_ops == ()


def test_model_without_dense_last_layer_has_a_reason():
    reason = ar.unadaptable_reason(_conv_net())
    assert reason is not None and "Conv" in reason and "dense" in reason
    with pytest.raises(ar.UnsupportedModelError, match="Conv"):
        ar.find_dense_tail(_conv_net())


def test_a_tail_that_only_data_shows_unsupported_is_refused():
    x = np.zeros((3, 2, 4), np.float32)
    assert ar.unadaptable_reason(_sequence_net()) is None  # the graph alone looks fine
    with pytest.raises(ar.UnsupportedModelError, match="not a flat vector"):
        ar.repair(_sequence_net(), x, np.zeros(3, np.int64))


def test_numpy_tail_matches_onnxruntime_for_patched_weights(data):
    """The cheap evaluator (cached pre-activation + sparse update, both layers) and
    apply_patch + onnxruntime agree on the scores of an arbitrary patch."""
    v, x, y = data
    model = _dense_net(v, corrupt=6.0, softmax=False)
    tail = ar.find_dense_tail(model, layers=2)
    net = ar.TailNet(model, tail)
    a0, out = ar.capture(model, tail, x)
    net.verify(a0, out)
    sites = [ar.WeightSite(0, 1, 2, 1.0), ar.WeightSite(1, 0, 2, 1.0), ar.WeightSite(1, 5, 0, 1.0)]
    evaluator = ar.PatchEvaluator(net, sites, a0, y, n_neg=0)
    values = evaluator.current + np.array([0.7, -5.0, 1.3])
    patched = ar.apply_patch(model, tail, sites, values)
    ort_scores = ort.InferenceSession(patched.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    np.testing.assert_allclose(evaluator.scores(values), ort_scores, rtol=1e-5, atol=1e-5)
    # the Gemm weight is stored (out, in): site (layer 0, in 1, out 2) is w1[2, 1]
    assert _weights(patched)["w1"][2, 1] == pytest.approx(values[0])


def _chain_net(activation: str, final_ops: tuple[str, ...], seed: int = 0) -> onnx.ModelProto:
    """x (N,5) -> Gemm -> `activation` -> Gemm(transB=0, alpha, beta) -> final_ops, random weights."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=6).astype(np.float32)
    w2, b2 = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)
    attrs = {"LeakyRelu": {"alpha": 0.2}, "Elu": {"alpha": 0.7}}.get(activation, {})
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h_pre"], transB=1),
        helper.make_node(activation, ["h_pre"], ["h"], **attrs),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["s0"], alpha=0.5, beta=2.0),
    ]
    for k, op in enumerate(final_ops):
        nodes.append(helper.make_node(op, [f"s{k}"], [f"s{k + 1}"], axis=1))
    nodes.append(helper.make_node("Identity", [f"s{len(final_ops)}"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


ACTIVATION_OPS = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Exp", "Identity"]


@pytest.mark.parametrize("activation", ACTIVATION_OPS)
@pytest.mark.parametrize("final_ops", [(), ("Softmax",), ("LogSoftmax",), ("Softmax", "Softmax")])
def test_numpy_tail_reproduces_onnxruntime(activation, final_ops):
    model = _chain_net(activation, final_ops)
    tail = ar.find_dense_tail(model, layers=2)
    assert len(tail.layers) == 2  # Identity between the layers is passed through
    x = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    net = ar.TailNet(model, tail)
    a0, out = ar.capture(model, tail, x, batch_size=16)
    net.verify(a0, out)


@pytest.mark.parametrize("activation", ["Sigmoid", "Elu", "Selu", "LeakyRelu", "Tanh"])
def test_gradient_loss_matches_finite_differences(activation):
    model = _chain_net(activation, ("Softmax",), seed=2)
    tail = ar.find_dense_tail(model, layers=2)
    net = ar.TailNet(model, tail)
    net.weights = [w.astype(np.float64) for w in net.weights]
    net.biases = [b.astype(np.float64) for b in net.biases]
    rng = np.random.default_rng(3)
    a0, y = rng.normal(size=(30, 5)), rng.integers(0, 4, size=30)
    costs = ar.gradient_loss_and_forward_impact(net, a0, y)
    eps = 1e-6
    for layer, (row, col) in [(0, (2, 1)), (0, (4, 5)), (1, (3, 2)), (1, (0, 0))]:
        w = net.weights[layer]
        w[row, col] += eps
        up = ar.cross_entropy(net.scores(a0), y).sum()
        w[row, col] -= 2 * eps
        down = ar.cross_entropy(net.scores(a0), y).sum()
        w[row, col] += eps
        assert costs[layer][0][row, col] == pytest.approx(abs(up - down) / (2 * eps), rel=1e-4, abs=1e-7)


def test_forward_impact_of_the_last_layer_is_the_normalised_contribution():
    """For the last layer the 'from behind' term is uniform (1/C), so FI is the mean over
    inputs of |o_i w_ij| / sum_k |o_k w_kj|, divided by C."""
    model = _chain_net("Relu", (), seed=4)
    net = ar.TailNet(model, ar.find_dense_tail(model, layers=1))
    a0 = np.abs(np.random.default_rng(5).normal(size=(7, 6)))
    fi = ar.gradient_loss_and_forward_impact(net, a0, np.zeros(7, dtype=np.int64))[0][1]
    contrib = np.abs(a0[:, :, None] * net.weights[0][None].astype(np.float64))
    expected = (contrib / contrib.sum(axis=1, keepdims=True)).mean(axis=0) / 4
    np.testing.assert_allclose(fi, expected, rtol=1e-6)


# ---- localisation -------------------------------------------------------------------------
def test_pareto_front_keeps_exactly_the_non_dominated_points():
    a = np.array([3.0, 1.0, 2.0, 3.0, 0.5, 2.0, 1.0])
    b = np.array([1.0, 3.0, 2.0, 0.5, 0.5, 2.0, 3.0])
    # (3,1), (2,2) twice and (1,3) twice are non-dominated; (3,0.5) and (0.5,0.5) are not
    assert ar.pareto_front(a, b).tolist() == [0, 1, 2, 5, 6]


def test_localisation_finds_the_corrupted_weight(data):
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    result = ar.repair(model, x, y, ar.ArachneConfig(generations=1, pop_size=4, patience=1), seed=0)
    names = [(w.tensor, w.index) for w in result.localised]
    assert names[0] == CORRUPT, names
    assert all(name == "w2" for name, _ in names)


def test_two_layer_localisation_stays_on_the_corrupted_path(data):
    """Over both layers, the top weight is on the path the corruption uses: the broken
    weight itself or the weight feeding hidden unit 0 (both can undo the fault)."""
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    tail = ar.find_dense_tail(model, layers=2)
    net = ar.TailNet(model, tail)
    a0, out = ar.capture(model, tail, x)
    neg = out.argmax(axis=1) != y
    sites = ar.localise(net, a0[neg], y[neg], a0[~neg], y[~neg], max_weights=5)
    top = (sites[0].layer, sites[0].row, sites[0].col)
    assert top in {(1, 0, 2), (0, 0, 0)}, sites
    assert len(sites) <= 5 and sites == sorted(sites, key=lambda s: -s.score)


# ---- search ---------------------------------------------------------------------------------
def test_fitness_follows_the_paper_and_the_artifact():
    correct = np.array([True, False, True, True, False])
    losses = np.array([0.1, 2.0, 0.2, 0.3, 1.0])
    # 2 failing inputs (1 fixed), 3 passing (2 kept)
    paper = (1 + 1) / (np.mean([0.1, 2.0]) + 1) + (2 + 1) / (np.mean([0.2, 0.3, 1.0]) + 1)
    assert ar.fitness_value(correct, losses, 2) == pytest.approx(paper)
    artifact = 2 * (1 + 1 / 3.0) + (2 + 1 / 2.0)
    assert ar.fitness_value(correct, losses, 2, kind="artifact", alpha=2.0) == pytest.approx(artifact)
    assert ar.fitness_value(correct, losses, 2, forbid_broken_passing=True) == -np.inf


def test_search_fixes_the_failing_inputs(data):
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    failing = int((_predict(model, x) != y).sum())
    progress = []
    result = ar.repair(
        model, x, y, ar.ArachneConfig(**FAST), seed=1, progress=lambda f, stage, m: progress.append((f, stage))
    )
    pred = _predict(result.model, x)
    assert result.patched and result.metrics["failing"] == failing
    assert result.metrics["fixed"] >= 0.9 * failing
    assert (pred == y).mean() >= 0.97
    assert result.metrics["fixed"] == float((pred[_predict(model, x) != y] == y[_predict(model, x) != y]).sum())
    assert [s for _, s in progress][:2] == ["capture", "localise"] and progress[-1] == (1.0, "done")
    assert all(0 <= f <= 1 for f, _ in progress)
    changed = {k for k, w in _weights(result.model).items() if not np.array_equal(w, _weights(model)[k])}
    assert changed == {"w2"}


def test_forbid_broken_passing_never_breaks_a_passing_input(data):
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    before = _predict(model, x) == y
    for fitness in ar.FITNESS_KINDS:
        result = ar.repair(
            model, x, y, ar.ArachneConfig(forbid_broken_passing=True, fitness=fitness, init="current", **FAST), seed=3
        )
        after = _predict(result.model, x) == y
        assert after[before].all(), fitness
        assert result.metrics["broken"] == 0 and result.metrics["fixed"] > 0


def test_same_seed_same_repair(data):
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    config = ar.ArachneConfig(pop_size=12, generations=5, patience=5, init="current")
    first, second = (ar.repair(model, x, y, config, seed=11) for _ in range(2))
    assert first.localised == second.localised
    assert first.model.SerializeToString() == second.model.SerializeToString()
    other = ar.repair(model, x, y, config, seed=12)
    assert not np.array_equal(_weights(other.model)["w2"], _weights(first.model)["w2"])


def test_de_checks_the_deadline_every_generation():
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    dims = 5
    result = ar.differential_evolution(
        lambda v: -float(np.sum((v - 1.0) ** 2)),
        np.zeros(dims),
        np.zeros(dims),
        np.ones(dims),
        np.full(dims, -5.0),
        np.full(dims, 5.0),
        np.random.default_rng(0),
        pop_size=10,
        generations=50,
        patience=50,
        should_stop=should_stop,
    )
    assert (result.generations, result.stop_reason) == (3, "deadline")
    assert result.fitness >= -dims  # never worse than member 0, the current weights (all zero)


def test_de_converges_on_a_smooth_problem():
    dims = 4
    target = np.array([0.5, -1.0, 2.0, 0.0])
    result = ar.differential_evolution(
        lambda v: -float(np.sum((v - target) ** 2)),
        np.zeros(dims),
        np.zeros(dims),
        np.ones(dims),
        np.full(dims, -5.0),
        np.full(dims, 5.0),
        np.random.default_rng(0),
        pop_size=20,
        generations=200,
        patience=30,
    )
    np.testing.assert_allclose(result.best, target, atol=0.05)


def test_repair_with_the_deadline_already_passed_runs_no_generation(data):
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    result = ar.repair(model, x, y, ar.ArachneConfig(**FAST), seed=0, should_stop=lambda: True)
    assert result.metrics["generations"] == 0


def test_nothing_to_repair_returns_the_model_unchanged(data):
    v, x, y = data
    model = _dense_net(v)
    result = ar.repair(model, x, y, seed=0)
    assert result.model is model and not result.patched and result.localised == []


def test_bad_inputs_name_the_field(data):
    v, x, y = data
    model = _dense_net(v, corrupt=6.0)
    with pytest.raises(ValueError, match="y must be one label per input"):
        ar.repair(model, x, y[:-1])
    with pytest.raises(ValueError, match="labels outside"):
        ar.repair(model, x, y + 5)
    with pytest.raises(ValueError, match="crossover"):
        ar.repair(model, x, y, ar.ArachneConfig(crossover=1.5))
    with pytest.raises(ValueError, match="fitness"):
        ar.repair(model, x, y, ar.ArachneConfig(fitness="best"))


# ---- dependency isolation -----------------------------------------------------------------
def test_no_file_in_services_arachne_imports_torch():
    files = sorted(ARACHNE_DIR.rglob("*.py"))
    assert any(f.name == "arachne_repair.py" for f in files)
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "torch" or n.startswith("torch.") or n.startswith("torchvision") for n in names), (
                f"{file.name} imports {names}"
            )


# ---- the service, through the real SDK server and gRPC ------------------------------------
def _approach_module():
    pytest.importorskip("fixbench.sdk")
    return service_module("arachne")


@pytest.fixture
def arachne_service(store, tmp_path, data):
    """An Arachne Repair server on loopback, the artifact store behind it, and a job maker."""
    from google.protobuf import struct_pb2

    from fixbench.arrays import npz_bytes
    from fixbench.grpcutil import Server, channel
    from fixbench.sdk.server import RepairServicer
    from fixbench.v1 import repair_pb2, repair_pb2_grpc

    module = _approach_module()
    store_server, _, client = store
    _, x, y = data
    split = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    servicer = RepairServicer(module.Arachne, store_server.address, str(tmp_path / "arachne-cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    ch = channel(server.address)

    def job(model: onnx.ModelProto, **params):
        p = struct_pb2.Struct()
        p.update(params)
        return repair_pb2.RepairJob(
            job_id="",
            model=client.upload_bytes(model.SerializeToString()),
            params=p,
            seed=4,
            data=repair_pb2.DatasetRef(repair=split, input_shape=[4], num_classes=3),
            budget=repair_pb2.Budget(wall_seconds=60),
        )

    yield repair_pb2_grpc.RepairStub(ch), job, client, repair_pb2
    ch.close()
    server.stop(0)


def test_service_declares_itself_without_torch():
    cls = _approach_module().Arachne
    cls.validate_declaration()
    assert (cls.name, cls.level, cls.uses_torch, cls.needs) == ("arachne", "neuron", False, ("repair_data",))
    assert {p.name for p in cls.params} >= {"max_weights", "pop_size", "crossover", "forbid_broken_passing"}


def test_service_check_reports_a_model_without_dense_last_layer(arachne_service, data):
    stub, job, _, pb = arachne_service
    reply = stub.Check(pb.CheckRequest(job=job(_conv_net())))
    # refused before any search: by the SDK's signature check (the conv net's input does not fit
    # the data) or by Arachne's own (no dense last layer)
    assert not reply.adaptable and ("Conv" in reply.reason or "inputs of shape" in reply.reason)
    v, _, _ = data
    assert stub.Check(pb.CheckRequest(job=job(_dense_net(v, corrupt=6.0)))).adaptable


def test_service_fix_repairs_and_diagnoses_over_grpc(arachne_service, data):
    stub, job, client, pb = arachne_service
    v, x, y = data
    request = pb.FixRequest(job=job(_dense_net(v, corrupt=6.0), pop_size=30, generations=40, patience=10))
    events = list(stub.Fix(request, timeout=60))
    result = events[-1].result
    assert result.status == pb.REPAIR_STATUS_REPAIRED, result.message
    assert (result.diagnosis.weights[0].tensor, tuple(result.diagnosis.weights[0].index)) == CORRUPT
    assert "localised" in result.diagnosis.summary and result.metrics["fixed"] > 0
    stages = [e.progress.stage for e in events if e.WhichOneof("event") == "progress"
              and e.progress.stage not in ("queued", "started")]  # the SDK's own events
    assert stages[:2] == ["capture", "localise"] and stages[-1] == "done"
    assert events[-1].result.timings.repair_seconds > 0
    repaired = onnx.load_from_string(client.fetch_bytes(result.repaired_model))
    assert (_predict(repaired, x) == y).mean() >= 0.95
