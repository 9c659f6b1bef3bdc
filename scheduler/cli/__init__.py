"""The ``gridsched`` command: one module per command group, with the reports and plots it prints."""
