"""``python -m scheduler.cli``: the same as the ``gridsched`` command."""

from scheduler.cli.main import main

raise SystemExit(main())
