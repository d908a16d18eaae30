"""Loading a service's ``approach.py`` from a test.

Every service folder has an ``approach.py``, so ``import approach`` in one pytest process takes
whichever service folder came first on ``sys.path`` (a NeuRecover test once got VeRe's). Each
service's module is therefore loaded by path under a name of its own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SERVICES = Path(__file__).resolve().parents[2] / "services"


def service_module(service: str) -> ModuleType:
    """``services/<service>/approach.py`` as module ``<service>_approach`` (hyphens as underscores);
    the folder goes on ``sys.path`` first so that the approach's own helper modules import."""
    folder = SERVICES / service
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = service.replace("-", "_") + "_approach"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "approach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
