"""``python -m thunder_scheduler``: the same as the ``thunder-scheduler`` command."""

from thunder_scheduler.cli import main

raise SystemExit(main())
