"""``dctnet`` — the command line. Each sub-command lives in ``DCTNetLib.commands.<name>`` and exposes

    HELP: str                                  one-line description
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int       exit code

and a module docstring whose first paragraph names the command and whose remaining paragraphs (with at least
one example line ``dctnet <name> ...``) become the end of ``dctnet <name> --help``, with the reStructuredText
markup removed (:func:`plain_text`).

Sub-command modules import nothing heavy at module level (torch, numpy and the models are imported inside
``add_arguments``/``run``), and only the invoked sub-command's ``add_arguments`` runs, so ``dctnet --help`` and
``dctnet --version`` never import torch and one broken optional dependency cannot take the whole tool down.
User errors (:class:`DCTNetError`) print one clear line and exit with status 2; Ctrl-C exits with 130 and
SIGTERM with 143, both after the command has removed its temporary files and stopped its workers, leaving only
valid files behind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading
import warnings

from . import __version__
from .errors import DCTNetError, Terminated, raise_terminated
from .io.atomic import check_path_length

# OpenMP threads that spin while waiting make torch up to ~6× slower on a CPU that is busy with other work (a laptop
# running Slicer; measured in benchmarks/README.md: small G(Y) 4.19 s with the default, 0.73 s with PASSIVE on the
# shared 2-core machine). Set here, for `dctnet` and `python -m DCTNetLib` (the processes the Slicer modules start),
# before any command imports torch; importing the package elsewhere (Slicer's own process, a user's script) changes
# no environment variable. An explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name on the command line → module under DCTNetLib.commands
COMMANDS: dict[str, str] = {
    "prepare": "prepare",
    "train-cdm": "train_cdm",
    "train": "train",
    "evaluate": "evaluate",
    "reconstruct": "reconstruct",
    "drr": "drr",
    "demo": "demo",
    "info": "info",
    "weights": "weights",
    "export": "export",
    "plot": "plot",
    "reproduce": "reproduce",
    "worker": "worker",
}


def _load(module_name: str):
    return importlib.import_module(f"{__package__}.commands.{module_name}")


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")   # :func:`~pkg.name` → pkg.name
_LITERAL = re.compile(r"``([^`]+)``")       # ``text`` → text
_TICKS = re.compile(r"`([^`]+)`")           # `dctnet prepare` → dctnet prepare


def plain_text(text: str) -> str:
    """Help text without reStructuredText markup: roles, double and single backticks, ``::`` block markers."""
    text = _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))
    text = _TICKS.sub(r"\1", text)
    text = re.sub(r"(?m)(\S)::$", r"\1:", text)  # "Examples::" → "Examples:"
    return re.sub(r"(?m)^\s*::\s*$\n?", "", text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs keep their line breaks (examples stay one per line); all text is :func:`plain_text`."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


def _details(module) -> str:
    """The module docstring after its first paragraph (what the command does, its examples)."""
    parts = (module.__doc__ or "").strip().split("\n\n", 1)
    return parts[1] if len(parts) == 2 else ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``dctnet`` parser. ``only``: add the arguments of that sub-command alone (the others keep their
    one-line help), so a command line imports just what its own command needs; None builds every sub-command."""
    parser = argparse.ArgumentParser(
        prog="dctnet", formatter_class=HelpFormatter,
        description="DCT-Net: reconstruct a 128³ CT from a PA and a lateral radiograph.",
        epilog="Start with:\n  dctnet demo                     # the whole pipeline on a built-in chest CT\n"
               "  dctnet reconstruct --help       # your own radiographs\n"
               "  dctnet info                     # the shipped model's card, this machine\n"
               "Each command's --help shows examples.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"dctnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{module_name}"):
                continue  # sub-command not part of this build
            raise
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=_details(module))
        if only is None or only == name:
            module.add_arguments(command)
        command.formatter_class = HelpFormatter  # after add_arguments, which may have set its own
        command.set_defaults(_run=module.run)
    return parser


def _requested_command(argv: list[str]) -> str:
    """The sub-command named on the command line ("" when none): the first argument that is not an option."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    """Run ``dctnet``; ``argv=None`` (the console script, ``python -m DCTNetLib``) also prints every Python
    warning as one line, ``dctnet COMMAND: warning: …``, without the source path and line of the default format."""
    if argv is None:
        warnings.showwarning = _one_line_warning
        _printable_streams()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_requested_command(argv))
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
        _check_output_paths(args)
        return int(args._run(args) or 0)
    except DCTNetError as exc:
        print(f"dctnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"dctnet {args.command}: {how}; files written so far are valid{_how_to_continue(args)}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


# Options naming what a command writes (a file or a folder): checked before the command starts.
_OUTPUT_OPTIONS = ("output", "dicom")


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuse an output path the system cannot take (over 4,095 bytes, a name over 255) in one line, before any
    work: otherwise the first ``stat`` of it, wherever that is, ends the command in a traceback."""
    for name in _OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            check_path_length(value)


def _printable_streams() -> None:
    """Characters the terminal's encoding lacks (``³``, ``×``, ``—`` under ``PYTHONIOENCODING=ascii`` or a C locale)
    are printed as ``\\xNN`` escapes instead of ending ``--help`` or a message in a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    command = _requested_command(sys.argv[1:]) or "dctnet"
    text = " ".join(str(message).split())
    print(f"dctnet {command}: warning: {text}" if command != "dctnet" else f"dctnet: warning: {text}",
          file=file or sys.stderr)


def _how_to_continue(args: argparse.Namespace) -> str:
    """What the interrupt message may truthfully promise for this command."""
    if hasattr(args, "resume"):
        return " (re-run the same command with --resume to continue)."
    if args.command == "prepare":
        return " (re-run the same command to continue: finished cases are skipped)."
    return "."


if __name__ == "__main__":  # python -m DCTNetLib.cli
    sys.exit(main())
