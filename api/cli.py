"""`xmodal-serve`: the HTTP service. The routes arrive with the API issue."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmodal-serve",
        description="Serve the search API and web page. Not implemented yet.")
    parser.parse_args(argv)
    print("xmodal-serve: not implemented yet; see README.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
