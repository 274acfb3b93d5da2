"""The settings a checkpoint recommends for itself (``napari_sam.json`` in its folder or hub repository), in effect
wherever it is loaded: segment everything, propagation, refinement, and how images are fitted into its input."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ModelLoadError
from ..settings import EverythingSettings, FramingSettings, PropagationSettings, RefineSettings, Settings
from .loading import read_checkpoint_json

#: The file in a checkpoint folder that holds the settings it recommends.
RECOMMENDATIONS_FILE = "napari_sam.json"

#: The section that describes a checkpoint's instance head (see :mod:`~napari_sam.core.decoding.instance_head`).
HEAD_SECTION = "instances"
#: The settings classes by their key in a checkpoint's ``napari_sam.json``.
RECOMMENDATION_SECTIONS: dict[str, type[Settings]] = {
    "segment_everything": EverythingSettings, "propagation": PropagationSettings, "refine": RefineSettings,
    "image": FramingSettings}


@dataclass(frozen=True)
class Recommendations:
    """The settings a checkpoint recommends (the class defaults where it recommends nothing).

    Attributes:
        everything, propagation, refine: the settings in effect for that checkpoint.
        image: how a whole image is fitted into the model's input (the file's ``"image"`` section).
        instances: the checkpoint's instance head, as the file's ``"instances"`` section describes it (checked when
            the head is loaded: :func:`~napari_sam.core.decoding.instance_head.load_head`); None when it has none.
        source: where they come from: the recommendations file's checkpoint, or ``"defaults"``.
    """

    everything: EverythingSettings = field(default_factory=EverythingSettings)
    propagation: PropagationSettings = field(default_factory=PropagationSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    image: FramingSettings = field(default_factory=FramingSettings)
    source: str = "defaults"
    instances: dict | None = None

    @classmethod
    def from_dict(cls, values: dict, source: str) -> Recommendations:
        """Recommendations from a ``napari_sam.json`` dict: sections named as in :data:`RECOMMENDATION_SECTIONS`."""
        if not isinstance(values, dict):
            raise ValueError(f"must hold a JSON object with the sections {sorted(RECOMMENDATION_SECTIONS)}.")
        unknown = set(values) - set(RECOMMENDATION_SECTIONS) - {HEAD_SECTION}
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}; the sections are "
                             f"{sorted([*RECOMMENDATION_SECTIONS, HEAD_SECTION])}.")
        head = values.get(HEAD_SECTION)
        if head is not None and not isinstance(head, dict):
            raise ValueError(f'the "{HEAD_SECTION}" section must be a JSON object describing the instance head.')
        parts = {}
        for key, kind in RECOMMENDATION_SECTIONS.items():
            section = values.get(key, {})
            try:
                if not isinstance(section, dict):
                    raise ValueError(f"must be a JSON object of settings, not {section!r}.")
                parts[key] = kind.from_dict(section)
            except ValueError as error:
                raise ValueError(f'the "{key}" section: {error}') from error
        return cls(everything=parts["segment_everything"], propagation=parts["propagation"],
                   refine=parts["refine"], image=parts["image"], source=source, instances=head)


def read_recommendations(folder_or_id: str, label: str | None = None) -> Recommendations:
    """The settings a checkpoint recommends, from ``napari_sam.json`` in its folder (or hub repository);
    ``label`` names the checkpoint as its ``source`` (default: ``folder_or_id``).

    Raises:
        ModelLoadError: the file exists but is not a valid JSON object, or holds unknown or invalid settings.
    """
    values = read_checkpoint_json(folder_or_id, RECOMMENDATIONS_FILE)  # a malformed file raises ModelLoadError
    if values is None:
        return Recommendations()
    try:
        return Recommendations.from_dict(values, source=label or str(folder_or_id))
    except ValueError as error:
        raise ModelLoadError(f"{RECOMMENDATIONS_FILE} of {folder_or_id!r}: {error}") from error
