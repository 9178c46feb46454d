"""``dctnet`` — the command line. Each sub-command lives in ``DCTNetLib.commands.<name>`` and exposes

    HELP: str                                  one-line description
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int       exit code

Sub-command modules are imported lazily so ``dctnet --help`` stays fast and one broken optional
dependency cannot take the whole tool down. User errors (:class:`DCTNetError`) print one clear line
and exit with status 2; Ctrl-C exits with 130 and SIGTERM with 143, both after the command has removed its
temporary files and stopped its workers, leaving only valid files behind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from .errors import DCTNetError, Terminated, raise_terminated

# name on the command line → module under DCTNetLib.commands
COMMANDS: dict[str, str] = {
    "prepare": "prepare",
    "train-cdm": "train_cdm",
    "train": "train",
    "evaluate": "evaluate",
    "reconstruct": "reconstruct",
    "demo": "demo",
    "info": "info",
    "weights": "weights",
    "export": "export",
    "reproduce": "reproduce",
}


def _load(module_name: str):
    return importlib.import_module(f"{__package__}.commands.{module_name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dctnet",
        description="DCT-Net: reconstruct a 128³ CT from a PA and a lateral radiograph.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{module_name}"):
                continue  # sub-command not part of this build
            raise
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)  # unwind like Ctrl-C: no temporary file left behind
    try:
        return int(args._run(args) or 0)
    except DCTNetError as exc:
        print(f"dctnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"dctnet {args.command}: {how}; files written so far are valid{_how_to_continue(args)}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _how_to_continue(args: argparse.Namespace) -> str:
    """What the interrupt message may truthfully promise for this command."""
    if hasattr(args, "resume"):
        return " (re-run the same command with --resume to continue)."
    if args.command == "prepare":
        return " (re-run the same command to continue: finished cases are skipped)."
    return "."


if __name__ == "__main__":  # python -m DCTNetLib.cli
    sys.exit(main())
