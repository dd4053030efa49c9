"""Reproducible benchmarks for jobsvc, side by side with procrastinate, pgqueuer and pgbench.

Run ``python -m bench`` (``make bench``); ``python -m bench --help`` lists the
benchmarks and flags. Never part of ``make test``. See bench/README.md.
"""
