"""``python -S -m engine.shim <container dir>``: start a container's shim (see :mod:`engine.shim.shim`)."""

from __future__ import annotations

import sys

from engine.shim.shim import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
