"""Benchmarks of liteyuki-comm against raw multiprocessing baselines: ``python -m benchmarks``.

This package imports nothing at import time: spawned baseline children import
``benchmarks._bare`` and must not pay for liteyuki (see ``_bare``).
"""
