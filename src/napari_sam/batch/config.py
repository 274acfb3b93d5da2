"""What a batch run does, as one object: the run's own settings and the settings of segment everything, tiling and
propagation that the docks use. It is saved as a JSON settings file, turned into a command line, and hashed so that
a re-run knows which outputs are its own.

A settings file looks like::

    {"napari_sam_batch": 1,
     "batch": {"mode": "everything", "model": "tiny-cells"},
     "segment_everything": {"points_per_side": 16},
     "tiling": {}, "propagation": {}}

Missing fields take their defaults. A missing ``segment_everything`` or ``propagation`` section means the settings
the checkpoint recommends, as in the docks (the bundled tiny-cells recommends its own; others get Meta's defaults);
:meth:`RunConfig.resolved` fills them in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..core.model import DEFAULT_CHECKPOINT, PRECISIONS, read_recommendations, resolve_checkpoint
from ..core.settings import EverythingSettings, PropagationSettings, Settings, TilingSettings, setting
from .files import write_atomically

#: The version of the settings-file format.
SETTINGS_FILE_FORMAT = 1
#: The modes of a run.
MODES = ("everything", "prompts", "propagate", "embed")


@dataclass(frozen=True)
class BatchSettings(Settings):
    """The run's own settings: what to do, with which model, and what to write."""

    mode: str = setting(
        "everything", help="everything: segment every object of every plane; prompts: segment the objects of a "
        "prompts file; propagate: extend each prompted object through its stack; embed: only fill the embedding "
        "store.", choices=MODES)
    model: str = setting(DEFAULT_CHECKPOINT, help="Bundled name, hub id or folder of a SAM checkpoint.")
    device: str = setting("auto", help="auto (a GPU per worker where there are GPUs, else the CPU), cpu, cuda, "
                          "cuda:N or mps.")
    precision: str = setting("auto", help="auto: bfloat16 where the device computes it fast, else float32.",
                             choices=PRECISIONS)
    contrast: str = setting(
        "napari", help="How pixel values map to the model's input. napari: the limits napari gives a new layer of "
        "the file (so stored embeddings serve the docks too); percentiles: the 0.5 and 99.5 percentiles; or two "
        "numbers LOW,HIGH.")
    labels_format: str = setting(
        "auto", help="auto: zarr for zarr inputs and labels over 1 GiB, else TIFF.", choices=("auto", "tiff", "zarr"),
        flag="--labels")
    table_format: str = setting("csv", help="The per-object table: csv, or parquet (needs pyarrow).",
                                choices=("csv", "parquet"), flag="--table")
    video_model: str = setting(
        "", help="propagate: a SAM2-family video checkpoint to track objects with (empty: the model, prompting each "
        "slice from the previous one).")
    stack_axis: int = setting(
        -1, -8, 7, "propagate: the leading axis to propagate along (-1: the last one before the rows, z of a "
        "(t, z, y, x) stack).")
    channel: int = setting(
        -1, -1, 1 << 16, "The channel to segment of files whose metadata names a channel axis (OME-TIFF, ImageJ "
        "TIFF, OME-zarr); -1: none, and a file with several channels is refused.")
    tiles_per_task: int = setting(
        16, 1, 1 << 16, "A large image is split into tasks of this many tiles (the result does not change).",
        advanced=True)

    def _check(self) -> None:
        if not self.model.strip():
            raise ValueError("model must name a checkpoint (a bundled name, hub id or folder).")
        self.contrast_limits()

    def contrast_limits(self) -> tuple[float, float] | None:
        """The fixed contrast limits of ``contrast`` (LOW,HIGH), or None for a rule (napari, percentiles)."""
        if self.contrast in ("napari", "percentiles"):
            return None
        try:
            low, high = (float(part) for part in self.contrast.split(","))
        except ValueError:
            raise ValueError(f"contrast must be napari, percentiles or two numbers LOW,HIGH, got {self.contrast!r}."
                             ) from None
        if not low < high:
            raise ValueError(f"contrast LOW,HIGH needs LOW < HIGH, got {self.contrast!r}.")
        return low, high


#: The sections of a settings file and their classes.
RUN_SECTIONS = {"batch": BatchSettings, "segment_everything": EverythingSettings, "tiling": TilingSettings,
                "propagation": PropagationSettings}
#: Sections that default to the checkpoint's recommendations.
RECOMMENDED = ("segment_everything", "propagation")
#: Fields that do not change any output (left out of :meth:`RunConfig.digest`).
NOT_IN_DIGEST = {"batch": {"device", "tiles_per_task"}}


@dataclass(frozen=True)
class RunConfig:
    """Everything a batch run is told, in the settings classes the docks and the command line are made from.

    ``everything`` and ``propagation`` None: the settings the checkpoint recommends (see :meth:`resolved`).
    """

    batch: BatchSettings = field(default_factory=BatchSettings)
    everything: EverythingSettings | None = None
    tiling: TilingSettings = field(default_factory=TilingSettings)
    propagation: PropagationSettings | None = None

    def sections(self) -> dict[str, Settings]:
        """The sections that are set (a recommended section left to the checkpoint is not)."""
        found = {"batch": self.batch, "segment_everything": self.everything, "tiling": self.tiling,
                 "propagation": self.propagation}
        return {key: value for key, value in found.items() if value is not None}

    def resolved(self) -> RunConfig:
        """This config with the sections left to the checkpoint filled in with what it recommends (read from its
        ``napari_sam.json``, or the defaults)."""
        if self.everything is not None and self.propagation is not None:
            return self
        recommended = read_recommendations(resolve_checkpoint(self.batch.model), label=self.batch.model)
        return dataclasses.replace(self, everything=self.everything or recommended.everything,
                                   propagation=self.propagation or recommended.propagation)

    def to_dict(self) -> dict:
        sections = {key: value.to_dict() for key, value in self.sections().items()}
        return {"napari_sam_batch": SETTINGS_FILE_FORMAT, **sections}

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """A config from a settings-file dict; a ValueError names an unknown section or a bad setting."""
        if not isinstance(values, dict):
            raise ValueError("a settings file must hold a JSON object.")
        values = dict(values)
        version = values.pop("napari_sam_batch", SETTINGS_FILE_FORMAT)
        if version != SETTINGS_FILE_FORMAT:
            raise ValueError(f"settings format {version!r} is not the one this version reads ({SETTINGS_FILE_FORMAT}).")
        unknown = set(values) - set(RUN_SECTIONS)
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}; the sections are {sorted(RUN_SECTIONS)}.")
        parts = {}
        for key, kind in RUN_SECTIONS.items():
            if key in RECOMMENDED and key not in values:
                parts[key] = None
                continue
            section = values.get(key, {})
            if not isinstance(section, dict):
                raise ValueError(f"section {key!r} must be a JSON object.")
            try:
                parts[key] = kind.from_dict(section)
            except ValueError as error:
                raise ValueError(f"section {key!r}: {error}") from None
        return cls(parts["batch"], parts["segment_everything"], parts["tiling"], parts["propagation"])

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a settings file; a ValueError names the file and what is wrong with it."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"Could not read the settings file {path}: {error}") from None
        try:
            return cls.from_dict(values)
        except ValueError as error:
            raise ValueError(f"The settings file {path}: {error}") from None

    def save(self, path: str | Path) -> Path:
        """Write the settings file (atomically)."""
        return write_atomically(Path(path), json.dumps(self.to_dict(), indent=2).encode())

    def digest(self) -> str:
        """A hash of every setting that changes the outputs (of the :meth:`resolved` config)."""
        values = {key: {name: value for name, value in section.to_dict().items()
                        if name not in NOT_IN_DIGEST.get(key, ())}
                  for key, section in self.resolved().sections().items()}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def command_line(self, inputs: list[str], output: str, settings_file: str | None = None) -> str:
        """The ``napari-sam segment`` command that runs this config on ``inputs``: with ``settings_file``, that
        file (saved from this config); else, as options, every setting that differs from what the command fills
        in for it: the checkpoint's recommendation for segment everything and propagation, else the default."""
        words = ["napari-sam", "segment", *inputs, "--out", output]
        if settings_file is not None:
            words += ["--settings", settings_file]
        else:
            recommended = dataclasses.replace(self, everything=None, propagation=None).resolved().sections()
            for key, section in self.sections().items():
                infos = {info.name: info for info in section.fields()}
                baseline = recommended[key] if key in ("segment_everything", "propagation") else type(section)()
                changed = {name: value for name, value in section.to_dict().items()
                           if value != getattr(baseline, name)}
                for name, value in changed.items():
                    info = infos[name]
                    if info.kind is bool:
                        words.append(info.flag if value else "--no-" + info.flag[2:])
                    else:
                        words += [info.flag, str(value)]
        return shlex.join(words)
