"""A small local git repository that plays an original repair tool for the `--wrap` tests: its
own package (`toyfix`), its own pinned stack (requirements.txt), a command line like a research
tool's. Its repair is real: it recalibrates the logits' bias on the repair split by gradient
descent on cross-entropy (onnxruntime computes the logits). `--behave` makes it crash, write
nothing or hang, so the wrapper's status mapping can be tested."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

# The tool's own pins: an onnxruntime older than the SDK's, so the two stacks visibly differ.
REQUIREMENTS = "numpy==2.4.6\nonnx==1.23.2\nonnxruntime==1.23.2\n"
ENTRY = "python -m toyfix --model {model} --data {data} --output {output} --seed {seed}"

MAIN = '''
"""toyfix: recalibrates the bias of the layer that produces the logits."""
import argparse, sys, time
import numpy as np, onnx, onnxruntime as ort
from onnx import helper, numpy_helper


def logits_bias(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    init = {t.name for t in model.graph.initializer}
    node = producer.get(model.graph.output[0].name)
    if node is not None and node.op_type == "Softmax":
        node = producer.get(node.input[0])
    if node is None:
        return None, None
    if node.op_type == "Add":
        bias = next((i for i in node.input if i in init), None)
        return (node.output[0], bias) if bias else (None, None)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] in init:
        return node.output[0], node.input[2]
    return None, None


def main():
    p = argparse.ArgumentParser(prog="toyfix")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--behave", default="repair", choices=["repair", "crash", "nothing", "hang"])
    a = p.parse_args()
    print(f"toyfix: onnxruntime {ort.__version__}, numpy {np.__version__}", flush=True)
    if a.behave == "crash":
        print("toyfix: loading the model", flush=True)
        print("toyfix: the gradient exploded at step 3", flush=True)
        sys.exit(3)
    if a.behave == "hang":
        print("toyfix: searching forever", flush=True)
        time.sleep(3600)
    model = onnx.load(a.model)
    logits, bias = logits_bias(model)
    if a.behave == "nothing" or bias is None:
        print("toyfix: nothing to recalibrate", flush=True)
        return
    d = np.load(a.data + "/repair.npz")
    x, y = d["x"].astype(np.float32), d["y"].astype(np.int64)
    probe = onnx.ModelProto(); probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_empty_tensor_value_info(logits))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    z = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float64)
    init = {t.name: t for t in model.graph.initializer}
    b0 = numpy_helper.to_array(init[bias]).astype(np.float64)
    h, b = z - b0, b0.copy()
    onehot = np.eye(z.shape[1])[y]
    for step in range(a.steps):
        s = h + b
        e = np.exp(s - s.max(1, keepdims=True)); e /= e.sum(1, keepdims=True)
        b -= 1.0 * (e - onehot).mean(0)
    print(f"toyfix: repair accuracy {((h + b0).argmax(1) == y).mean():.3f} -> {((h + b).argmax(1) == y).mean():.3f}", flush=True)
    init[bias].CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias))
    onnx.save(model, a.output)


if __name__ == "__main__":
    main()
'''


def make_tool_repo(root: Path) -> tuple[Path, str]:
    """A git repository of the toy tool under `root`; returns (path, commit)."""
    repo = root / "toyfix-repo"
    (repo / "toyfix").mkdir(parents=True)
    (repo / "toyfix" / "__init__.py").write_text('"""toyfix, a stand-in for an original repair tool."""\n')
    (repo / "toyfix" / "__main__.py").write_text(textwrap.dedent(MAIN).lstrip())
    (repo / "requirements.txt").write_text(REQUIREMENTS)
    (repo / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "toyfix"
        version = "0.1.0"

        [tool.setuptools]
        packages = ["toyfix"]
        """).lstrip())
    git = ["git", "-c", "user.name=toy", "-c", "user.email=toy@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "toyfix 0.1.0"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    return repo, commit
