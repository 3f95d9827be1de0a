"""The `graphsentry` command-line program.

Each package contributes its own subcommands through a ``register(subparsers)``
function in its ``cli`` module (``ingest.cli``, ``knowledge.cli``,
``detector.cli``, ``training.commands``). This module only assembles them and
applies one error discipline to all of them (it lives in ``training`` because
that package is the most downstream one: it may import all others, none imports it):

* exit 0: done; the summary is on stdout, logs on stderr;
* exit 2: a user error (bad option, missing file, broken config or model directory):
  one line naming the fix, no traceback;
* exit 3: none of the inputs could be read (every record/file dead-lettered);
* exit 1: an internal error (a bug): one line, the traceback only with ``--debug``.

``--debug``, ``--version``, ``-v`` and ``--log-format`` are accepted before or after
the subcommand, and every subcommand's ``--help`` ends with an example.
"""
from __future__ import annotations

import argparse
import logging
import sys

from detector import cli as detector_cli
from ingest import cli as ingest_cli
from knowledge import cli as knowledge_cli
from training import commands as training_commands
from training.cli_examples import EXAMPLES

EXIT_USAGE = 2
EXIT_NOTHING_READ = 3


def version() -> str:
    """``graphsentry X.Y.Z`` from the installed package metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return f"graphsentry {_version('graphsentry')}"
    except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
        return "graphsentry (not installed)"


def _add_common(p: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes. On subcommands they default to SUPPRESS, so a value given
    before the subcommand is not reset by the subcommand's default."""
    keep = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--version", action="version", version=version())
    p.add_argument("--debug", action="store_true", help="show the traceback of an error", **keep)
    p.add_argument("-v", "--verbose", action="count", help="more logging (-v info, -vv debug)",
                   **({"default": 0} if top else keep))
    p.add_argument("--log-format", choices=["text", "json"], help="log lines on stderr: text (default) or JSON lines",
                   **({"default": None} if top else keep))


def _subparsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(path, parser)`` of every subcommand under ``p``, nested ones (``kg build``) included."""
    for action in p._actions:  # argparse keeps subcommands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield path + (name,), sp
                yield from _subparsers(sp, path + (name,))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphsentry",
        description="Streaming security detection on temporal graphs.",
        epilog="example:\n  graphsentry demo          # train and serve on the bundled samples\n"
               "  graphsentry COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (ingest_cli, knowledge_cli, detector_cli, training_commands):
        module.register(sub)
    from training import demo, registry_cli
    from training.fraud.cli import register_fraud

    register_fraud(sub)
    demo.register(sub)
    __import__("training.archive_cli").archive_cli.register(sub)  # graphsentry archive (one line: no merge conflicts)
    registry_cli.register(sub)
    __import__("training.retrain").retrain.register(sub)  # graphsentry retrain (one line: no merge conflicts)
    for path, sp in _subparsers(parser):
        _add_common(sp, top=False)
        example = EXAMPLES.get(" ".join(path))
        if example:
            sp.formatter_class = argparse.RawDescriptionHelpFormatter
            text = "example:\n" + "\n".join(f"  {line}" for line in example.splitlines())
            sp.epilog = f"{sp.epilog}\n\n{text}" if sp.epilog else text
    return parser


def configure_logging(verbose: int, fmt: str) -> None:
    """Logs go to stderr: WARNING by default, INFO with -v, DEBUG with -vv; text or JSON lines."""
    level = logging.WARNING - 10 * min(verbose or 0, 2)
    try:
        from detector.logs import configure_logging as configure
    except ImportError:  # pragma: no cover - detector.logs is part of the package
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    configure(level, fmt)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())  # one line, whatever the message held


def _nothing_readable():
    """The exception class the readers raise when no input could be read at all (exit 3)."""
    try:
        from ingest.readers import NothingReadable
    except ImportError:  # pragma: no cover
        return ()
    return NothingReadable


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.log_format or "text")
    command = " ".join(x for x in (args.command, getattr(args, "kg_command", None),
                                   getattr(args, "fraud_command", None)) if x)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print(f"graphsentry {command}: interrupted", file=sys.stderr)
        return 130
    except _nothing_readable() as exc:
        if args.debug:
            raise
        print(f"graphsentry {command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_NOTHING_READ
    except (ValueError, OSError) as exc:
        # User errors (bad value, missing/unreadable file, broken config or model directory) get one
        # line, not a traceback. OSError covers missing paths, directories given as files, permissions.
        if args.debug:
            raise
        print(f"graphsentry {command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, said in one line
        if args.debug:
            raise
        print(f"graphsentry {command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(run again with --debug for the traceback and report it)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
