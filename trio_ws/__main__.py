"""``python -m trio_ws``: see ``trio_ws._features._cli``."""

from ._features._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
