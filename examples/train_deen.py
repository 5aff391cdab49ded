"""Compatibility: ``python examples/train_deen.py [options]`` is ``python examples/train.py --method deen [options]``.

See ``examples/train.py`` (or the installed ``vireid-train``) and ``--help`` for the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import main

if __name__ == "__main__":
    sys.exit(main(["--method", "deen", *sys.argv[1:]]))
