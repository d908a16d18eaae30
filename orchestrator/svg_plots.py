"""Matplotlib figures as inline SVG for the report: deterministic bytes, text kept as text in
a font the browser has too, so what matplotlib measured is what the page shows."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

# DejaVu Sans ships with matplotlib and is what Debian's browsers fall back to; naming it in
# the SVG keeps the browser's text the width matplotlib laid out (titles overlapped when the
# browser picked its own font).
FONT = "DejaVu Sans"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Text stays text (smaller, searchable); a fixed salt keeps the SVG ids stable, so a
    # report rebuilt from the same ledger is byte-identical.
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "fixbench", "font.size": 9,
                         "font.family": "sans-serif", "font.sans-serif": [FONT]})
    return plt


def to_svg(fig) -> str:
    plt = pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "fixbench"})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def palette(names: Sequence[str]) -> dict[str, Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


