"""Prints pinned requirement lines for the named packages, taken from pyproject.toml.

Images install their dependencies in layers (sdk, torch, platform), so each layer needs a
subset of the project's pins; reading them from pyproject.toml keeps one source of truth.

    python pins.py pyproject.toml grpcio onnx            -> grpcio==1.85.1\\nonnx==1.23.2
    python pins.py pyproject.toml --rename onnxruntime=onnxruntime-gpu onnxruntime
    python pins.py pyproject.toml --rest grpcio onnx     -> every pin except those named
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*$")


def canonical(name: str) -> str:
    """PEP 503 normalised name, so 'Grpcio_Tools' and 'grpcio-tools' match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_pins(pyproject: Path) -> dict[str, tuple[str, str]]:
    """{canonical name: (name as written, version)} for every `name==version` dependency."""
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"pins.py: cannot read {pyproject}: {exc}") from exc
    pins: dict[str, tuple[str, str]] = {}
    for line in data.get("project", {}).get("dependencies", []):
        match = _PIN.match(line)
        if not match:
            raise SystemExit(
                f"pins.py: {pyproject} [project].dependencies entry {line!r} is not pinned as name==version"
            )
        pins[canonical(match[1])] = (match[1], match[2])
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("names", nargs="*", help="packages to print (or, with --rest, to leave out)")
    parser.add_argument("--rest", action="store_true", help="print every pin except the named ones")
    parser.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="print package OLD under the name NEW with OLD's version (e.g. a -gpu build)",
    )
    args = parser.parse_intermixed_args(argv)
    pins = project_pins(args.pyproject)
    renames = {}
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            parser.error(f"--rename {item!r} is not OLD=NEW")
        renames[canonical(old)] = new
    wanted = [canonical(n) for n in args.names]
    unknown = [n for n in wanted if n not in pins]
    if unknown:
        raise SystemExit(f"pins.py: {unknown} not pinned in {args.pyproject} [project].dependencies")
    selected = [k for k in pins if k not in wanted] if args.rest else wanted
    for key in selected:
        name, version = pins[key]
        print(f"{renames.get(key, name)}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
