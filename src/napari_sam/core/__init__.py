"""The core of napari-sam: no Qt, no napari. Subpackages by concept, each importing only the ones below it:

- :mod:`~napari_sam.core.workflows`: segment everything, propagation through stacks, refinement, concepts
  (SAM3) and prompted objects;
- :mod:`~napari_sam.core.predictor`: :class:`~napari_sam.core.predictor.Predictor`, one model and the embeddings of
  the current image, predicting masks from prompts;
- :mod:`~napari_sam.core.decoding`: prompts, the mask decoders and what they return;
- :mod:`~napari_sam.core.embeddings`: image embeddings in memory and on disk, and the encoder that makes them;
- :mod:`~napari_sam.core.image`: images read lazily, their frames and tiles, and their preparation for a model;
- :mod:`~napari_sam.core.model`: checkpoints of the SAM families, their geometry, devices and precision.

Below them all: the settings classes (:mod:`~napari_sam.core.settings`), errors, objects kept as a box and a mask
cropped to it (:mod:`~napari_sam.core.objects`), box operations (:mod:`~napari_sam.core.boxes`) and the
allocator's memory (:mod:`~napari_sam.core.memory`).
"""
