"""Issue 18 item 12: two orchestrators on one results folder — the second is refused at
once with the holder's pid, before it starts any service or touches the ledger."""

import os
import subprocess
import sys
import time

import pytest

from orchestrator.folder_lock import FolderBusy, results_folder_lock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with results_folder_lock(tmp_path):
        with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
            with results_folder_lock(tmp_path):
                pass
    with results_folder_lock(tmp_path):  # released on exit
        pass


def test_run_study_refuses_a_folder_another_orchestrator_holds(tmp_path):
    from orchestrator.spec import StudySpec
    from orchestrator.study import StudyError, run_study

    code = ("import sys, time; from orchestrator.folder_lock import results_folder_lock\n"
            "with results_folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        spec = StudySpec.model_validate({"name": "s", "suite": "quick", "seeds": [0], "budget": {"wall_seconds": 5},
                                         "approaches": [{"name": "noop"}]})
        started = time.monotonic()
        with pytest.raises(StudyError, match=f"in use by orchestrator pid {holder.pid}"):
            run_study(spec, tmp_path, bench_dir=tmp_path / "bench")
        assert time.monotonic() - started < 5 and not (tmp_path / "ledger.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
