"""Grouping a plane's prompts into objects, and predicting them with as few decoder calls as possible.

Each box (rectangle, or a polygon/ellipse with its mask) is one object. With one box, every point refines it;
with several, a point refines the first box that contains it. Points outside every box form one more object.
"""

from __future__ import annotations

import numpy as np

from ..core.prompted_objects import PromptObject
from .layer_prompts import PlanePrompts


def group_objects(prompts: PlanePrompts) -> list[PromptObject]:
    """The objects described by a plane's prompts, boxes first, in drawing order."""
    owner = np.full(len(prompts.points), -1)
    if len(prompts.boxes) == 1:
        owner[:] = 0
    else:
        for index, (r0, c0, r1, c1) in enumerate(prompts.boxes):
            inside = (owner < 0) & (prompts.points[:, 0] >= r0) & (prompts.points[:, 0] <= r1) & (
                prompts.points[:, 1] >= c0) & (prompts.points[:, 1] <= c1)
            owner[inside] = index
    objects = [PromptObject(prompts.points[owner == index], prompts.labels[owner == index], box, mask)
               for index, (box, mask) in enumerate(zip(prompts.boxes, prompts.masks))]
    loose = owner < 0
    if loose.any():
        objects.append(PromptObject(prompts.points[loose], prompts.labels[loose]))
    return objects
