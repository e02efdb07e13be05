"""Command-line arguments every entry point shares: the ``nbhelpers`` commands and ``python -m
nbhelpers.endpoints.serving`` (the gateway process ``nbhelpers serve`` and ``LocalServer`` start).

- :func:`dataclass_flags`: one flag per field of settings dataclasses (``transformers.HfArgumentParser``), with
  ``--toy`` / ``--tiny`` when a dataclass has a ``stand_in`` field (:func:`add_stand_in_flags`);
- :func:`settings_from_args`: the dataclass back from the parsed arguments;
- :func:`run_handler`: run the parsed command's handler, errors a user can act on in one line with an exit status.

Kept free of torch: the serving gateway process parses its arguments here and never loads a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, TypeVar

from nbhelpers.errors import UserFacingError
from nbhelpers.stand_in import STAND_IN_CHOICES, STAND_IN_FIELD_METADATA, STAND_INS

SettingsT = TypeVar("SettingsT")

#: Exit status of a command stopped with Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED_STATUS = 130
#: Exit status of bad input a user can fix (a flag, a file, a setting); 1 is for everything else that stops a command.
BAD_INPUT_STATUS = 2


class _StandInShortcut(argparse.Action):
    """``--toy`` / ``--tiny``: short for ``--stand-in toy`` / ``--stand-in tiny``; two different ones are refused."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any, **__: Any) -> None:
        current = getattr(namespace, self.dest, None)
        if current not in (None, self.const):
            parser.error(f"give one stand-in: {self.option_strings[0]} contradicts --stand-in {current}.")
        setattr(namespace, self.dest, self.const)


def add_stand_in_flags(parser: argparse.ArgumentParser, *, with_option: bool = True) -> None:
    """Add ``--stand-in {toy,tiny,none}`` (unless a settings field already made it) and ``--toy`` / ``--tiny``."""
    if with_option:
        parser.add_argument(
            "--stand-in",
            "--stand_in",
            dest="stand_in",
            default=None,
            choices=STAND_IN_CHOICES,
            help=str(STAND_IN_FIELD_METADATA["help"]),
        )
    for stand_in in STAND_INS:
        parser.add_argument(
            f"--{stand_in}",
            dest="stand_in",
            action=_StandInShortcut,
            nargs=0,
            const=stand_in,
            help=f"Short for --stand-in {stand_in}.",
        )


def dataclass_flags(settings_classes: type | tuple[type, ...]) -> argparse.ArgumentParser:
    """A parent parser (``argparse.ArgumentParser(parents=[...])``) with one flag per field of ``settings_classes``.

    ``transformers.HfArgumentParser`` writes the flags: names equal field names, as in diffusers' training scripts
    (``--batch_sizes``; ``--batch-sizes`` is accepted too), types, choices and defaults come from the field, and
    ``--help`` shows each field's ``metadata["help"]``, so all of it is written once, in the dataclass. A
    ``stand_in`` field also gets ``--toy`` and ``--tiny``. Turn the parsed arguments back into settings with
    :func:`settings_from_args`.
    """
    # Lazy: transformers takes over a second to import (without torch), and only building a parser needs it.
    from transformers import HfArgumentParser

    classes = settings_classes if isinstance(settings_classes, tuple) else (settings_classes,)
    flags = HfArgumentParser(classes, add_help=False)
    if any(field.name == "stand_in" for cls in classes for field in dataclasses.fields(cls)):
        add_stand_in_flags(flags, with_option=False)
    return flags


def settings_from_args(settings_cls: type[SettingsT], args: argparse.Namespace) -> SettingsT:
    """The ``settings_cls`` instance described by arguments parsed with :func:`dataclass_flags`."""
    fields = dataclasses.fields(settings_cls)  # type: ignore[arg-type]  # a dataclass, by this function's contract
    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in fields if f.init}
    return settings_cls(**values)


def one_line(message: object) -> str:
    """``message`` on one line (a multi-line message's lines joined by spaces), as every error is printed."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _is_out_of_memory(err: BaseException) -> bool:
    # torch.OutOfMemoryError by name: this module imports no torch (the endpoint gateway runs without it).
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"


def run_handler(args: argparse.Namespace) -> int:
    """Run ``args.handler(args)`` (``args.command`` names it in messages); return the exit status.

    Errors a user can act on become one line on stderr and exit status 2. A failure of the system (a full disk, a
    folder removed mid-run: any ``OSError``, also one whose message says what to do, such as
    :class:`~nbhelpers.jobs.run.OutputWriteError`) is one line and status 1, as is running out of memory (the line
    says what to shrink): status 2 is kept for input to change. Ctrl-C ends with one line and status 130 instead of
    a traceback: every file is written atomically, so none is left half-written, and a command registered with
    ``resumable=True`` says that running it again resumes.
    """
    prefix = f"nbhelpers {args.command}"
    try:
        return int(args.handler(args) or 0)
    except OSError as err:  # before UserFacingError: a full disk is not bad input, whatever the message advises
        print(f"{prefix}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except (UserFacingError, ValueError) as err:  # bad input, a download that failed: what to do about it
        print(f"{prefix}: error: {one_line(err)}", file=sys.stderr)
        return BAD_INPUT_STATUS
    except (MemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        print(
            f"{prefix}: error: out of memory ({one_line(err)[:200]}); use fewer images, a smaller size, or float16 "
            "on a GPU.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        resume = "; run the same command again to resume" if getattr(args, "resumable", False) else ""
        print(f"{prefix}: interrupted (Ctrl-C); no file was left half-written{resume}.", file=sys.stderr)
        return INTERRUPTED_STATUS
