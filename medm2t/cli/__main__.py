"""`python -m medm2t.cli`: the same as the `medm2t` command."""
import sys

from medm2t.cli import main

sys.exit(main())
