"""Command-line options generated from the settings classes (:mod:`napari_sam.core.settings`), the same ones the
docks' controls are generated from: one ``--option`` per field, with its type, default, limits and help."""

from __future__ import annotations

import argparse
import dataclasses


def add_settings(parser, settings_class, prefix: str, default_note: str = "", only: tuple[str, ...] | None = None,
                 choices: dict | None = None) -> None:
    """One ``--option`` per field of ``settings_class`` (into ``dest`` ``prefix`` + its name), with its type,
    limits and help; an option left out of the command line is left out of the namespace, so that a settings file
    or the checkpoint's recommendations fill it (see :func:`given_settings`). ``default_note`` replaces "default X"
    in the help; ``only``: these fields alone; ``choices``: fewer choices for some fields, by name."""
    for info in settings_class.fields():
        if only is not None and info.name not in only:
            continue
        if choices and info.name in choices:
            info = dataclasses.replace(info, choices=tuple(choices[info.name]))
        flag, dest = info.flag, prefix + info.name
        limits = f" [{info.low}..{info.high}]" if info.low is not None else ""
        default = argparse.SUPPRESS
        shown = default_note or (f"default {info.default!r}" if info.kind is str else f"default {info.default}")
        info = dataclasses.replace(info, help=info.help.replace("%", "%%"))  # argparse formats help with %
        if info.kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{info.help} ({shown})")
        elif info.choices:
            parser.add_argument(flag, dest=dest, choices=info.choices, default=default, help=f"{info.help} ({shown})")
        else:
            metavar = "TEXT" if info.kind is str else info.kind.__name__.upper()
            parser.add_argument(flag, dest=dest, type=info.kind, default=default, metavar=metavar,
                                help=f"{info.help}{limits} ({shown})")


def given_settings(args: argparse.Namespace, settings_class, prefix: str = "") -> dict:
    """The settings of ``settings_class`` given on the command line (options of :func:`add_settings`), by name."""
    return {info.name: getattr(args, prefix + info.name) for info in settings_class.fields()
            if hasattr(args, prefix + info.name)}
