"""``python -m vlmlab.tools.convert``."""

from vlmlab.tools.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
