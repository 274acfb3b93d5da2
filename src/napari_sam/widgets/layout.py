"""Compact building blocks for the docks, so that the canvas keeps most of the window: rows of widgets, folded
sections, wrapping status lines and narrow combo boxes."""

from __future__ import annotations

from magicgui.widgets import Container, Label, PushButton

#: The width, in characters, that an editable combo box asks for (longer entries scroll).
COMBO_CHARACTERS = 8
#: The widest a spin box may be, in pixels (its range's digits would widen it).
SPIN_WIDTH = 88


def row(*widgets, labels: bool = False) -> Container:
    """Widgets side by side, without margins."""
    container = Container(layout="horizontal", widgets=list(widgets), labels=labels)
    container.margins = (0, 0, 0, 0)
    return container


def column(*widgets, labels: bool = True) -> Container:
    """Widgets one below the other (with their labels on the left), without margins."""
    container = Container(widgets=list(widgets), labels=labels)
    container.margins = (0, 0, 0, 0)
    return container


def status_line(text: str = "") -> Label:
    """A label that takes the dock's width and wraps instead of widening it."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=text)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
    return label


def narrow(combo) -> None:
    """Keep a combo box (a magicgui ComboBox or layer picker) from widening its dock to its longest entry."""
    from qtpy.QtWidgets import QComboBox, QSizePolicy

    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(COMBO_CHARACTERS)
    native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)


def narrow_spin(spin) -> None:
    """Keep a spin box from widening its dock to the digits of its range."""
    spin.native.setMaximumWidth(SPIN_WIDTH)


class Fold:
    """A header button that shows or hides a body: ``header`` and ``body`` go into the dock one after the other.

    Attributes:
        header: a flat, checkable PushButton ("▸ title" folded, "▾ title" open).
        body: the Container that is shown or hidden.
    """

    def __init__(self, title: str, body: Container, expanded: bool = False, tooltip: str = ""):
        self.title, self.body = title, body
        self.header = PushButton(text=title, tooltip=tooltip or f"Show or hide {title.lower()}.")
        native = self.header.native
        native.setCheckable(True)
        native.setFlat(True)
        native.setStyleSheet("text-align: left; font-weight: bold;")
        native.toggled.connect(self._show)
        native.setChecked(expanded)
        self._show(expanded)

    @property
    def expanded(self) -> bool:
        return self.header.native.isChecked()

    @expanded.setter
    def expanded(self, value: bool) -> None:
        self.header.native.setChecked(bool(value))

    def _show(self, expanded: bool) -> None:
        self.header.text = ("▾ " if expanded else "▸ ") + self.title
        self.body.visible = expanded

    @property
    def widgets(self) -> list:
        return [self.header, self.body]
