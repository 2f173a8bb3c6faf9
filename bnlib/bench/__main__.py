"""``python -m bnlib.bench``: see :func:`bnlib.bench.core.main`."""

import sys

from bnlib.bench.core import main

if __name__ == "__main__":
    sys.exit(main())
