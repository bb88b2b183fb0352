"""``python -m thunder_sim``: the same as the ``thunder-sim`` command."""

import sys

from thunder_sim.cli import main

sys.exit(main())
