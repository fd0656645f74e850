"""`python -m skinsage ...`: the same as the installed `skinsage` command."""

from .app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
