"""Puts the repository root on ``sys.path``, so that a benchmark run as ``python benchmarks/X.py``
can import the test-support harnesses (``tests.support``), which are not part of the installed
package. Import it before them."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
