"""camfast's benchmark suite: `python -m benchmarks` (or `make bench`).

Each bench_<stem>.py module defines `cases(device, quick) -> list[Case]`; the runner times every
case's providers interleaved in one process, records peak memory, upserts CSV rows under
benchmarks/data/ (one file per device), draws a plot and prints the table.
"""
