"""The `fieldear` console script: a thin layer over library functions.

Each area registers its subcommands from a small module that imports nothing heavy at import
time; the handler imports what it needs. A FieldearError is printed as one line on stderr and
exits non-zero; the traceback goes to debug logging (``-v``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys

from runtime.errors import FieldearError

log = logging.getLogger("fieldear")

# Modules with a ``register(subparsers)`` function, in the order their commands appear in --help.
COMMAND_MODULES = (
    "runtime.cli.predict",  # predict, batch, evaluate
    "runtime.cli.listen",  # devices, listen, events, export
    "runtime.cli.field",  # status, config
    "runtime.cli.review",  # review
    "runtime.cli.serve",  # serve
    "runtime.cli.fleet",  # outbox, collect, report
    "convert.cli",  # train, convert
    "firmware_tools.cli",  # service, deploy
)


def version_text() -> str:
    from importlib import metadata

    try:
        own = metadata.version("fieldear")
    except metadata.PackageNotFoundError:
        own = "0+unknown"
    try:
        from runtime.model.interpreter import backend_version, find_backend

        name, _ = find_backend()
        backend = f"{name} {backend_version(name)}"
    except FieldearError:
        backend = "none installed"
    return f"fieldear {own} (Python {sys.version.split()[0]}; TFLite interpreter: {backend})"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version and the TFLite interpreter in use")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


# BLAS libraries numpy may be built with, and the variable each reads (once, when numpy is first imported)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """One BLAS thread for numpy, unless the user set it: the frontend's matrix products are small, and
    BLAS helper threads only compete with the TFLite interpreter and the --jobs workers (on a busy 2-core
    machine the mel product was 7x slower with them). Must run before numpy is imported to take effect."""
    import os

    if "numpy" in sys.modules:
        log.debug("numpy already imported: BLAS thread count left as it is")
        return
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


EXIT_CODES = """exit codes:
  0    ok
  1    some items failed (e.g. batch with unreadable files, outbox send with messages left pending,
       listen with log rows lost to a full disk)
  2    usage or input error (a bad option, a missing file, an invalid config or bundle)
  3    status: the service is not healthy
  130  interrupted (Ctrl-C)"""


class CommandParser(argparse.ArgumentParser):
    """The parser of `fieldear` and of each subcommand: -q/-v are accepted at every level, and a mistyped
    option is reported by the subcommand it was given to, with a suggestion."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.has_subcommands = False
        # SUPPRESS: a subcommand's parser leaves a -q/-v given before the subcommand as it is
        self.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                          help="debug logging, including tracebacks of errors (-vv: also of libraries)")
        self.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                          help="print only errors on stderr (no warnings, no progress)")

    def add_subparsers(self, **kwargs):
        self.has_subcommands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not self.has_subcommands:  # the innermost command reports what it does not know
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            options = [o for action in self._actions for o in action.option_strings]
            for word in message.split(": ", 1)[1].split():
                close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1) if word.startswith("-") else []
                if close:
                    message += f"; did you mean {close[0]}?"
        super().error(message)


# One placeholder per kind of value, so every command spells `--db PATH`, `--model DIR`, `--threads N` alike.
METAVARS = {
    "db": "PATH", "model": "DIR", "config": "FILE", "file": "FILE", "out": "PATH", "data_dir": "DIR",
    "root": "DIR", "exec_path": "PATH", "threads": "N", "device": "DEVICE", "device_id": "ID",
    "since": "WHEN", "label": "LABEL", "seed": "N", "name": "NAME", "client_id": "ID", "frontend": "NAME",
    "pooling": "NAME", "sample_rate": "HZ", "seconds": "S", "timeout": "S", "check_interval": "S",
}


def _placeholder(action: argparse.Action) -> str:
    if action.dest in METAVARS:
        return METAVARS[action.dest]
    if action.type is int or action.type is positive_int:
        return "N"
    if action.dest.endswith("_s"):
        return "S"
    if action.type is float:
        return "X"
    return action.dest.upper()


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    if action.nargs == 0 or default in (None, False, argparse.SUPPRESS) or default == [] or default == ():
        return False
    return bool(action.help) and action.help is not argparse.SUPPRESS and "default" not in action.help


def _subcommands(parser: argparse.ArgumentParser):
    """(choice action, parser) of every subcommand under ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield helps.get(name), sub
                yield from _subcommands(sub)


def polish(parser: argparse.ArgumentParser) -> None:
    """The CLI's one style, applied once to every command: a placeholder for each option's value, its
    default in its help, and the one-line help of a subcommand as its description when it has none."""
    for one_line, sub in [(None, parser), *_subcommands(parser)]:
        if sub.description is None and one_line:
            sub.description = one_line[0].upper() + one_line[1:] + "."
        for action in sub._actions:
            if not action.option_strings:
                continue
            if action.metavar is None and action.nargs != 0 and action.choices is None:
                action.metavar = _placeholder(action)
            if _shows_default(action):
                action.help += " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="fieldear",
        description="Sound classification for field monitoring: train an int8 TFLite model from labelled "
        "recordings, predict on files, listen to a microphone and log what is heard.",
        epilog="Run `fieldear COMMAND --help` for the options of each command.\n\n" + EXIT_CODES,
    )
    parser.set_defaults(verbose=0, quiet=False, func=None)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    polish(parser)
    return parser


class UserFormatter(logging.Formatter):
    """What a user reads: progress lines as they are, warnings and errors led by their level; no module names
    (those come with -v)."""

    def __init__(self):
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: int, quiet: bool) -> None:
    from runtime.field.sdnotify import use_journal_levels

    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr)
    root = logging.getLogger()
    root.setLevel(level)  # also when logging was configured before (main() called twice)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose else UserFormatter())
    use_journal_levels()  # under systemd, journald keeps the levels
    if verbose < 2:
        for noisy in ("matplotlib", "PIL", "absl", "tensorflow", "h5py"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def early_signals(argv: list[str]):
    """For `listen`: SIGHUP/SIGTERM handled from the first instruction on (systemctl reload sends SIGHUP right
    after start; SIGHUP's default would kill us). Light: runtime.field.signals imports only the standard library."""
    command = next((word for word in argv if not word.startswith("-")), None)
    if command != "listen":
        return None
    from runtime.field.signals import Signals

    return Signals().install()


def main(argv: list[str] | None = None) -> int:
    signals = early_signals(sys.argv[1:] if argv is None else argv)  # before the parser's imports
    limit_blas_threads()  # before anything imports numpy; inherited by worker processes
    parser = build_parser()
    args = parser.parse_args(argv)
    args.signals = signals
    setup_logging(args.verbose, args.quiet)
    if args.func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except FieldearError as exc:
        log.debug("error detail", exc_info=True)
        from runtime.field.sdnotify import stderr_is_journal

        prefix = "<3>" if stderr_is_journal() else ""
        print(f"{prefix}fieldear {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fieldear {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
