"""Child process of :func:`_common.run_in_subprocess`: ``python _child.py module:function '{json kwargs}' [threads]``.

Prints one line ``BENCH_RESULT {json}`` with the function's dict plus this process's peak RSS.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULT_MARKER, peak_rss_mb, set_threads  # noqa: E402


def main(argv: list[str]) -> int:
    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    threads = set_threads(int(argv[2]) if len(argv) > 2 else None)
    module_name, _, function_name = target.partition(":")
    start = time.perf_counter()
    result = getattr(importlib.import_module(module_name), function_name)(**kwargs)
    result = dict(result)
    result.update(peak_rss_mb=peak_rss_mb(), threads=threads, child_wall_s=round(time.perf_counter() - start, 2))
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
