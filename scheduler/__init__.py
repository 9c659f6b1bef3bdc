"""gridsched scheduler: optimiser (build, solve, extract), plans, CLI and services."""
