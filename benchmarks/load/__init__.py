"""Load tests for xret and its serving peers: closed- and open-loop generators, scenarios, plots.

Run it as `python -m benchmarks.load.cli` (subcommands `run`, `scenario`, `ceiling`, `plot`).
"""
