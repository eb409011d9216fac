"""``python -m benchmarks [--quick]``: run every figure and print one table."""

from __future__ import annotations

from ._suite import main

if __name__ == "__main__":
    raise SystemExit(main())
