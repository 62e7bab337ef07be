"""Stand-in for #28's lineage reader while it is built beside the report: no run has a lineage
yet. At the merge, ``tinyevo.app.drawing`` and ``tinyevo.app.report`` import ``load_lineage``
from the real reader instead (one import line each) and this module goes."""

from __future__ import annotations

import os
from typing import Any


def load_lineage(run_dir: str | os.PathLike) -> Any:
    """The lineage of the run in ``run_dir``: None, as for a run that predates lineage."""
    return None
