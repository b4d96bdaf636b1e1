"""`python -m segaccel COMMAND ...` is `segaccel COMMAND ...` (`segaccel.cli.main`)."""

import sys

from segaccel.cli.main import run

sys.exit(run())
