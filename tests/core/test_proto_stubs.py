"""The checked-in stubs must be exactly what protoc generates from proto/ (run `make proto`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path):
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto/fixbench/v1").glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos], cwd=ROOT, check=True)
    generated = sorted((tmp_path / "fixbench/v1").glob("*_pb2*.py*"))
    assert generated
    stale = [g.name for g in generated if (ROOT / "fixbench/v1" / g.name).read_bytes() != g.read_bytes()]
    assert not stale, f"stubs are stale, run `make proto`: {stale}"


def test_every_proto_element_has_a_comment():
    """The protos are the contract's documentation: every message, field, enum value, rpc."""
    import re

    for proto in (ROOT / "proto/fixbench/v1").glob("*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            declares = re.match(r"^(message|service|enum|rpc)\s", stripped) or re.match(
                r"^(repeated\s+|map<[^>]+>\s+)?[A-Za-z_.]+\s+[a-z_0-9]+\s*=\s*\d+;", stripped
            ) or re.match(r"^[A-Z_0-9]+\s*=\s*\d+;", stripped)
            if declares and "DescribeRequest {}" not in stripped:
                assert lines[i - 1].strip().startswith("//"), f"{proto.name}:{i + 1} lacks a comment: {stripped}"
