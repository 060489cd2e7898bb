"""Where the project's shared real data lives (``../shared/data`` next to the checkout).

A clone elsewhere (CI's clean clone, a scratch copy) points ``GAPLAB_SHARED_DATA`` at it; the
workplace's own copy at /work/shared/data is the last resort.
"""

import os
from pathlib import Path


def _shared_data() -> Path:
    candidates = [os.environ.get("GAPLAB_SHARED_DATA", ""),
                  Path(__file__).resolve().parents[2] / "shared" / "data",
                  "/work/shared/data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return Path(candidates[1])


SHARED_DATA = _shared_data()
