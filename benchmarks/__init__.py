"""camfast's benchmark suite: `python -m benchmarks` (or `make bench`).

Each bench_<stem>.py module defines `cases(device, quick) -> list[Case]` and writes nothing; the
runner times every case's providers interleaved in one process, records peak memory, writes CSV
rows into bench-results/ (git-ignored, one file per device), draws a plot and prints the table.
`python -m benchmarks.results` (`make bench-publish`) publishes them into benchmarks/data/, the
README and docs/benchmarks.md.
"""
