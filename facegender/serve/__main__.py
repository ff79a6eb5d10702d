"""`python -m facegender.serve [MODEL] ...`: the same as the CLI verb `facegender serve`."""

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *sys.argv[1:]]))
