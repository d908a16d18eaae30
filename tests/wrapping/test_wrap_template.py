"""services/_template_wrap, the template `fixbench new-approach --wrap` copies: it is complete
(every file the scaffold renders is there) and is never mistaken for an approach."""

from pathlib import Path

from fixbench.catalog import discover
from orchestrator.cli_scaffold import WRAP_TEMPLATE_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_the_wrap_template_is_complete_and_not_an_approach():
    assert WRAP_TEMPLATE_DIR == ROOT / "services" / "_template_wrap"
    for name in ("approach.py", "Dockerfile", "README.md", "wrap.py"):
        assert (WRAP_TEMPLATE_DIR / name).is_file(), name
    assert "_template_wrap" not in {m.name for m in discover(ROOT / "services")}
