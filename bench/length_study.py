"""The AIPO paper's length study at toy scale: `aipo study length` under another name.

    python bench/length_study.py [CONFIG] [--out DIR] [--iterations N] [--study-id ID] [--home DIR]

DPO and AIPO from the same base model with a length-biased ranker; the table and figure of
docs/length_study.md. Every argument is `aipo study length`'s; this script only calls it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aipo_cli.main import app  # noqa: E402

if __name__ == "__main__":
    app(["study", "length", *sys.argv[1:]])
