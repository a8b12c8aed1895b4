"""`xmodal-index`: batch indexing. The commands arrive with the indexer issue."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmodal-index",
        description="Batch indexing of image and text corpora (add, delete, reindex, status). "
                    "Not implemented yet: use the Python API (search.workspace) meanwhile.")
    parser.parse_args(argv)
    print("xmodal-index: no commands yet; see README 'Python API'.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
