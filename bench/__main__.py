"""`python -m bench`, from the repository's root (as `make bench` runs it), with the project's virtualenv."""

from __future__ import annotations

import importlib.util
import sys


def main() -> int:
    for module in ("psycopg", "redis", "twilio", "cryptography"):
        if importlib.util.find_spec(module) is None:  # a message, not a traceback
            print(
                f"bench: No module named {module!r}. Run it with the project's virtualenv: `make bench` or "
                "`.venv/bin/python -m bench`.",
                file=sys.stderr,
            )
            return 1
    from bench.cli import main as cli_main  # after the check: the benchmark imports them (twilio: its fake)

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
