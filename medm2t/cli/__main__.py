"""`python -m medm2t.cli`: the same as the `medm2t` command."""
import sys

from medm2t.cli import main

if __name__ == "__main__":  # build_parser imports every module of this package, this one too
    sys.exit(main())
