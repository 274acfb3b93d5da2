"""Widget controls generated from a settings dataclass (``napari_sam.core.settings``): one control per field, with
its limits and help, the basic ones shown and the advanced ones folded."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from napari.utils.notifications import show_error
from psygnal import Signal

from .layout import Fold, column, narrow_spin


def _decimals(default: float) -> int:
    """Decimals a spin box needs to show ``default`` (at least 2, at most 4)."""
    text = f"{default:.4f}".rstrip("0")
    return max(2, min(4, len(text.split(".")[1]) if "." in text else 0))


def control(info):
    """A magicgui control for one :class:`~napari_sam.core.settings.SettingInfo`."""
    if info.kind is bool:
        return CheckBox(text=info.label, value=info.default, tooltip=info.help)
    if info.choices:
        return ComboBox(label=info.label, choices=info.choices, value=info.default, tooltip=info.help)
    if info.kind is int:
        spin = SpinBox(label=info.label, value=info.default, min=info.low, max=info.high, step=info.step or 1,
                       tooltip=info.help)
    else:
        spin = FloatSpinBox(label=info.label, min=info.low, max=info.high, step=info.step or 0.05,
                            tooltip=info.help)
        spin.native.setDecimals(_decimals(info.default))
        spin.value = info.default
    narrow_spin(spin)
    return spin


class SettingsForm:
    """The controls of one settings class: ``widgets`` go into a dock (the basic controls, then a fold with the
    advanced ones).

    Signals:
        edited(): the user changed a value (not emitted by :meth:`show`).

    Attributes:
        controls: field name -> its magicgui control.
    """

    edited = Signal()

    def __init__(self, settings_class, advanced_title: str = "Advanced"):
        self.settings_class = settings_class
        infos = settings_class.fields()
        self.controls = {info.name: control(info) for info in infos}
        self.basic = column(*[self.controls[i.name] for i in infos if not i.advanced])
        advanced = [self.controls[i.name] for i in infos if i.advanced]
        self.fold = Fold(advanced_title, column(*advanced)) if advanced else None
        self._showing = False
        self._shown = settings_class()  # exact values: a spin box keeps only a few decimals
        for widget in self.controls.values():
            widget.changed.connect(self._on_change)

    @property
    def widgets(self) -> list:
        return [self.basic, *(self.fold.widgets if self.fold else [])]

    def _on_change(self, *args) -> None:
        if not self._showing:
            self.edited.emit()

    def value(self):
        """The settings the controls show, as a checked settings object (ValueError names a bad field). A value
        the user left alone keeps all its decimals."""
        values = self._shown.to_dict()
        for name, widget in self.controls.items():
            shown = values[name]
            if isinstance(shown, float) and hasattr(widget.native, "decimals"):
                shown = round(shown, widget.native.decimals())
            if widget.value != shown:
                values[name] = widget.value
        return self.settings_class(**values)

    def checked(self, what: str):
        """:meth:`value`, or None after telling the user which of ``what`` (e.g. "propagation options") is bad."""
        try:
            return self.value()
        except ValueError as error:
            show_error(f"Check the {what}: {error}")
            return None

    def show(self, settings) -> None:
        """Put ``settings``' values into the controls."""
        self._shown = settings
        self._showing = True
        try:
            for name, value in settings.to_dict().items():
                self.controls[name].value = value
        finally:
            self._showing = False
