"""A griffe extension for the API reference: napari-sam's Sphinx-style docstring habits, read as mkdocstrings reads
Google-style docstrings.

- Sphinx roles (``:class:`~napari_sam.core.predictor.Predictor```) are rewritten, before the docstring is parsed, as
  optional cross-references that mkdocs-autorefs resolves: a link where the object is documented, plain code where
  it is not (no warning either way). Names are resolved in the scope of the object whose docstring holds them; ``~``
  shows only the last part of the name, as in Sphinx.
- ``#:`` comments above a module or class attribute (Sphinx's attribute docstrings) become its docstring.
- The fields of the settings classes (made with :func:`napari_sam.core.settings.setting`) get their help, limits,
  dock label and command-line flag as their docstring, and their default as their value.
"""

from __future__ import annotations

import importlib
import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`(?P<tilde>~?)(?P<name>[\w.]+)`")


def _target(obj: griffe.Object, name: str) -> str:
    """The full path ``name`` means in ``obj``'s scope (``name`` itself where it cannot be resolved)."""
    if name.startswith("napari_sam."):
        return name
    head, _, rest = name.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:  # noqa: BLE001 - an unresolvable name is shown as written
        return name
    return f"{resolved}.{rest}" if rest else resolved


def _comment_above(obj: griffe.Object) -> str:
    """The ``#:`` comment lines right above an attribute's assignment, joined, or ""."""
    try:
        lines = obj.module.lines
    except Exception:  # noqa: BLE001 - no source (a compiled module)
        return ""
    found: list[str] = []
    index = (obj.lineno or 0) - 2
    while 0 <= index < len(lines) and lines[index].strip().startswith("#:"):
        found.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(found)


def _setting_infos(cls: griffe.Object) -> dict:
    """The :class:`~napari_sam.core.settings.SettingInfo` of each field of a settings class made with ``setting()``,
    by name (empty for other classes, or where the class cannot be imported)."""
    names = [name for name, member in cls.members.items() if not member.is_alias and member.is_attribute
             and isinstance(member.value, griffe.ExprCall) and str(member.value.function) == "setting"]
    if not names:
        return {}
    try:
        owner = getattr(importlib.import_module(cls.module.path), cls.name)
        return {info.name: info for info in owner.fields() if info.name in names}
    except Exception:  # noqa: BLE001 - not importable here: the fields keep their source
        return {}


#: Settings classes with controls in a dock, and with options on the command line (``napari-sam segment``/``embed``).
IN_DOCKS = {"EverythingSettings", "PropagationSettings", "RefineSettings", "TilingSettings"}
ON_COMMAND_LINE = {"EverythingSettings", "PropagationSettings", "TilingSettings", "BatchSettings"}


def _setting_docstring(cls_name: str, info) -> str:
    text = info.help
    if info.choices:
        text += " One of " + ", ".join(f"`{choice}`" for choice in info.choices) + "."
    elif info.low is not None and info.high is not None:
        text += f" From {info.low} to {info.high}."
    where = ([f"dock: *{info.label}*"] if cls_name in IN_DOCKS else []) + (
        [f"command line: `{info.flag}`"] if cls_name in ON_COMMAND_LINE else [])
    joined = "; ".join(where)
    return text + (f" {joined[:1].upper()}{joined[1:]}." if where else "")


class NapariSamDocstrings(griffe.Extension):
    """Settings fields' docstrings, ``#:`` comments, and Sphinx roles as optional autorefs (see the module)."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.is_class:
            infos = _setting_infos(obj)
            init = obj.members.get("__init__")
            for name, info in infos.items():
                field = obj.members[name]
                text = _setting_docstring(obj.name, info)
                field.docstring = griffe.Docstring(text, lineno=field.lineno, parent=field)
                field.value = repr(info.default)
                if init is not None and not init.is_alias and name in init.parameters:
                    init.parameters[name].default = repr(info.default)
        if obj.docstring is None and obj.is_attribute:
            comment = _comment_above(obj)
            if comment:
                obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
        if obj.docstring is None or ":`" not in obj.docstring.value:
            return

        def link(match: re.Match) -> str:
            name = match["name"]
            title = name.rsplit(".", 1)[-1] if match["tilde"] else name
            return f'<autoref identifier="{_target(obj, name)}" optional>`{title}`</autoref>'

        obj.docstring.value = ROLE.sub(link, obj.docstring.value)
