"""``python -m pipeline.cli ARGS``: the same as ``mktn ARGS`` (no console script needed)."""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
