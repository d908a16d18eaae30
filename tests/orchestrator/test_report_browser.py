"""report.html in a real browser (headless Chromium): the page loads, no two titles or
labels overlap, and every figure renders, for the quick study's report, a real you2026 study
(scale small: five subjects plus Adult, with robustness and fairness; shipped in
examples/data/you2026-small), a study of twenty approaches × ten subjects, and the
cross-study leaderboard."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browsercheck  # noqa: E402

from orchestrator.report import write_report  # noqa: E402

pytestmark = pytest.mark.skipif(browsercheck.chromium() is None, reason="Debian's chromium is not installed")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


def large_study(approaches: int = 20, subjects: int = 10, seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    names = [f"approach-{i:02d}-long-name" for i in range(approaches - 2)] + ["finetune", "noop"]
    rows = []
    for s in range(subjects):
        subject = f"SUBJECT-{s} ResNet-18 (stand-in)"
        for a, name in enumerate(names):
            for seed in range(seeds):
                status = "UNADAPTABLE" if (a + s) % 7 == 3 else ("REPAIRED" if a % 3 else "NOT_REPAIRED")
                rows.append({"study": "large", "approach": name, "level": "baseline" if name in ("finetune", "noop") else "model",
                             "approach_version": "1", "fault_id": f"fault-{s}", "subject": subject, "dataset": f"d{s}",
                             "architecture": "resnet18", "family": "misclassification", "stand_in": True, "seed": seed,
                             "state": "done", "status": status, "acc_before": 90.0, "acc_after": 90 + rng.normal(),
                             "rr": 0.0 if name == "noop" else abs(rng.normal(20, 10)), "nfr": abs(rng.normal(1, 0.5)),
                             "dacc": rng.normal(), "m_dasr": rng.normal(), "m_daaod": rng.normal(0, 0.02),
                             "repair_seconds": 10 ** rng.uniform(-2, 3), "job_seconds": 1.0, "attempts": 1,
                             "infra_errors": 0, "repaired_sha256": "", "model_changed": status == "REPAIRED",
                             "message": "", "diagnosed_fields": "[]", "params": "{}", "job_key": f"{s}{a}{seed}" * 8})
    return pd.DataFrame(rows)


def test_the_check_sees_overlapping_titles(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><h2 style='position:absolute;top:10px'>RR per approach</h2>"
                    "<h2 style='position:absolute;top:12px'>NFR per approach</h2></body></html>")
    assert browsercheck.check_page(page, tmp_path)["overlaps"]


@pytest.mark.parametrize("frame", ["quick", "you2026-small", "large"])
def test_the_report_lays_out_cleanly(tmp_path, frame):
    df = large_study() if frame == "large" else pd.read_parquet(EXAMPLES / frame / "results.parquet")
    written = write_report(df, tmp_path / frame, frame)
    seen = browsercheck.check_page(written["report"], tmp_path)
    assert seen["figures"] >= 5 and seen["blank"] == 0, seen
    assert seen["overlaps"] == [], seen["overlaps"][:10]


def test_the_leaderboard_of_studies_sharing_a_folder(tmp_path):
    from orchestrator.leaderboard import write_leaderboard

    for name in ("quick", "you2026-small"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.parquet").write_bytes((EXAMPLES / name / "results.parquet").read_bytes())
    page = write_leaderboard(tmp_path)
    text = page.read_text()
    assert "2 studies" in text and "href='quick/report.html'" in text and "finetune" in text
    seen = browsercheck.check_page(page, tmp_path)
    assert seen["overlaps"] == [] and seen["blank"] == 0, seen
    assert write_leaderboard(tmp_path / "quick") is None  # one study: no leaderboard
