"""The optimiser: inputs, LP build, solve, extraction and the plan.

Imports nothing of the service, the backtest or the CLI.
"""
