"""``dctnet worker`` — run ``dctnet`` commands sent on stdin, one JSON line each, with the model kept loaded.

For programs that reconstruct again and again (the Slicer module): the first request pays for starting Python,
importing torch and loading the model; later ones only for the reconstruction. Each request is one line
``{"args": ["reconstruct", "--pa", ..., "--progress", "json"]}``; the command runs exactly as on the command line
(same checks, same files, same output lines), and one line ``{"event": "exit", "returncode": N}`` follows it.
The worker exits at the end of its input (the program that started it closed the pipe or ended) or on an empty
line. Only one model is kept: asking for another weights file or device replaces it. Ctrl-C or SIGTERM ends the
worker itself.

Example (requests.jsonl holds ``{"args": ["reconstruct", "--pa", "pa.png", "--lat", "lat.png", "--output",
"ct.nrrd"]}``, one request a line)::

    dctnet worker < requests.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import cli
from . import reconstruct

HELP = "run dctnet commands sent as JSON lines on stdin, keeping the model loaded (for programs)"
EXIT_EVENT = "exit"
# what a worker runs: the short requests that need torch (and a model) loaded, not a training
ALLOWED = ("reconstruct", "drr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults()  # no options: requests come on stdin


def _request(line: str) -> list[str]:
    """The argument list of one request line (a refusal is a ValueError with one line)."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not a JSON request: {line[:80]!r} ({exc})") from exc
    args = record.get("args") if isinstance(record, dict) else None
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args) or not args:
        raise ValueError('a request is {"args": ["reconstruct", ...]} (a list of strings)')
    if args[0] not in ALLOWED:
        raise ValueError(f"a worker runs only {' and '.join(ALLOWED)}, not {args[0]!r}")
    return args


def run(args: argparse.Namespace) -> int:
    reconstruct.MODEL_CACHE = {}
    print(json.dumps({"event": "ready"}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        try:
            request = _request(line)
        except ValueError as exc:
            print(f"dctnet worker: error: {exc}", file=sys.stderr, flush=True)
            returncode = 2
        else:
            try:
                returncode = cli.main(request)
            except SystemExit as exc:  # argparse refusing the arguments (it printed why)
                returncode = exc.code if isinstance(exc.code, int) else 2
        sys.stderr.flush()
        print(json.dumps({"event": EXIT_EVENT, "returncode": int(returncode)}), flush=True)
    return 0
