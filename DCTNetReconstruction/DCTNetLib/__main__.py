"""``python -m DCTNetLib`` (what the Slicer modules launch with PythonSlicer) == ``dctnet``."""

import sys

from .cli import main

sys.exit(main())
