"""`python -m segaccel.cli COMMAND ...` is `segaccel COMMAND ...`."""

import sys

from segaccel.cli.main import run

sys.exit(run())
