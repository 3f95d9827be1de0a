"""The `graphsentry` command line: one program for every package's subcommands.

It lives in ``training`` because that package is the last layer (ingest -> knowledge ->
detector -> training): it may import all the others and none imports it. Each subcommand is
defined next to the code it drives and is added here by one ``register(subparsers)`` line in
:func:`register_all`:

* ``ingest``, ``windows`` (``ingest.cli``), ``kg build|stats|explain`` (``knowledge.cli``),
  ``score``, ``serve``, ``replay`` (``detector.cli``);
* ``train``, ``calibrate``, ``evaluate`` (this package's :mod:`training.cli.train`,
  :mod:`training.cli.calibrate`, :mod:`training.cli.evaluate`), ``fraud`` (``training.fraud.cli``),
  ``demo`` (``training.demo``), ``archive``, ``models``, ``retrain`` (``training.archive_cli``,
  ``training.registry_cli``, ``training.retrain``), ``ui`` (``detector.ui.cli``).

This module applies one error discipline to all of them:

* exit 0: done; the summary is on stdout, logs on stderr;
* exit 2: a user error (bad option, missing file, broken config or model directory):
  one line naming the fix, no traceback;
* exit 3: none of the inputs could be read (every record/file dead-lettered);
* exit 1: an internal error (a bug): one line, the traceback only with ``--debug``.

``--debug``, ``--version``, ``-v`` and ``--log-format`` are accepted before or after
the subcommand, and every subcommand's ``--help`` ends with an example (:mod:`training.cli.examples`).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from typing import Any

from detector import cli as detector_cli
from detector.logs import configure_logging as _configure_logging
from detector.ui import cli as ui_cli
from ingest import cli as ingest_cli
from ingest.readers import NothingReadable
from knowledge import cli as knowledge_cli
from training import archive_cli, demo, registry_cli, retrain
from training.cli import calibrate, evaluate, train
from training.cli.examples import EXAMPLES
from training.commands import one_line as _one_line
from training.fraud.cli import register_fraud

EXIT_USAGE = 2
EXIT_NOTHING_READ = 3


def register_all(sub: argparse._SubParsersAction) -> None:
    """Every subcommand, one line each, in the order ``graphsentry --help`` lists them."""
    ingest_cli.register(sub)  # ingest, windows
    knowledge_cli.register(sub)  # kg build|stats|explain
    detector_cli.register(sub)  # score, serve, replay
    train.register(sub)
    calibrate.register(sub)
    evaluate.register(sub)
    register_fraud(sub)  # fraud train|score|evaluate
    demo.register(sub, main)
    archive_cli.register(sub)
    registry_cli.register(sub)  # models list|show|register|promote|rollback|diff|verify
    retrain.register(sub)
    ui_cli.register(sub)  # ui, ui export-verdicts


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
    keep: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--version", action="version", version=version())
    p.add_argument("--debug", action="store_true", help="show the traceback of an error", **keep)
    p.add_argument("-v", "--verbose", action="count", help="more logging (-v info, -vv debug)",
                   **({"default": 0} if top else keep))
    p.add_argument("--log-format", choices=["text", "json"], help="log lines on stderr: text (default) or JSON lines",
                   **({"default": None} if top else keep))


def _subparsers(p: argparse.ArgumentParser,
                path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
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
    register_all(sub)
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
    _configure_logging(logging.WARNING - 10 * min(verbose or 0, 2), fmt)


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
    except NothingReadable as exc:
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
