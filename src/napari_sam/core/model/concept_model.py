"""SAM3's concept model (``Sam3Model``) with its CLIP tokenizer: the features of the texts it is asked for, and the
raw instances of one embedded frame. transformers' SAM3 processor imports torchvision, so napari-sam tokenizes and
pools exemplar boxes itself (:func:`~napari_sam.core.model.roi_align.roi_align`)."""

from __future__ import annotations

import types
from collections import OrderedDict
from pathlib import Path

import torch

from .roi_align import roi_align

#: Tokens of a text prompt (SAM3's processor pads to 32).
TEXT_TOKENS = 32
#: The text SAM3's processor gives box-only prompts.
BOX_ONLY_TEXT = "visual"
#: Texts whose features are kept.
TEXTS_KEPT = 64


def install_roi_align() -> None:
    """Give transformers' SAM3 modules a ``torchvision.ops.roi_align`` (napari-sam's torch one) where torchvision
    is not installed: their exemplar-box encoder calls it through a module attribute that is missing then."""
    import importlib

    for name in ("transformers.models.sam3.modeling_sam3",
                 "transformers.models.sam3_lite_text.modeling_sam3_lite_text"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if not hasattr(module, "torchvision"):
            vars(module)["torchvision"] = types.SimpleNamespace(ops=types.SimpleNamespace(roi_align=roi_align))


class ConceptModel:
    """A ``Sam3Model`` with its tokenizer, and the features of the texts it was asked for."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self._texts: OrderedDict[str, tuple] = OrderedDict()
        install_roi_align()

    def text_features(self, text: str) -> tuple:
        """(features output, attention mask) of ``text``, computed once."""
        found = self._texts.get(text)
        if found is not None:
            self._texts.move_to_end(text)
            return found
        if self.tokenizer is None:
            raise ValueError("This SAM3 checkpoint has no tokenizer, so it cannot read prompts (exemplar boxes alone "
                             f"go with the text {BOX_ONLY_TEXT!r}): save its CLIP tokenizer (tokenizer.json, or "
                             "vocab.json and merges.txt) into its folder.")
        device = next(self.model.parameters()).device
        tokens = self.tokenizer([text], padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                                return_tensors="pt")
        mask = tokens["attention_mask"].to(device)
        with torch.inference_mode():
            features = self.model.get_text_features(input_ids=tokens["input_ids"].to(device), attention_mask=mask,
                                                    return_dict=True)
        self._texts[text] = (features, mask)
        if len(self._texts) > TEXTS_KEPT:
            self._texts.popitem(last=False)
        return features, mask

    def detect(self, embedding, extras, frame_size, text, boxes_xyxy, box_labels):
        """Raw instances of one frame: (scores (q,), mask logits (q, m, m), boxes (q, 4) xyxy normalised)."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        level0, level1, pos0, pos1, pos2 = extras
        vision = Sam3VisionEncoderOutput(fpn_hidden_states=(level0, level1, embedding, embedding),
                                         fpn_position_encoding=(pos0, pos1, pos2, pos2))
        features, mask = self.text_features(text)
        inputs = {}
        if boxes_xyxy is not None and len(boxes_xyxy):
            height, width = frame_size
            xyxy = torch.as_tensor(boxes_xyxy, dtype=torch.float32) / torch.tensor([width, height, width, height])
            cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1)
            device = embedding.device
            inputs = {"input_boxes": cxcywh[None].to(device, embedding.dtype),
                      "input_boxes_labels": torch.as_tensor(box_labels, dtype=torch.long)[None].to(device)}
        with torch.inference_mode():
            out = self.model(vision_embeds=vision, text_embeds=features, attention_mask=mask, **inputs)
        scores = out.pred_logits[0].float().sigmoid() * out.presence_logits[0].float().sigmoid()
        return scores, out.pred_masks[0].float(), out.pred_boxes[0].float()


def load_tokenizer(name_or_path: str):
    """The CLIP tokenizer saved with a SAM3 checkpoint, or None when it has none (text prompts then say so).

    transformers makes an empty tokenizer where there are no tokenizer files, so their presence is checked first."""
    import transformers

    folder = Path(name_or_path)
    if folder.is_dir():
        present = (folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                             and (folder / "merges.txt").is_file())
    else:
        present = any(_hub_file(name_or_path, name) for name in ("tokenizer.json", "vocab.json"))
    if not present:
        return None
    for kind in (getattr(transformers, name) for name in ("CLIPTokenizerFast", "CLIPTokenizer")):
        try:
            tokenizer = kind.from_pretrained(name_or_path)
        except Exception:  # noqa: BLE001 - unreadable tokenizer files: try the other kind, else None
            continue
        if len(tokenizer) > 2:
            return tokenizer
    return None


def _hub_file(repo: str, filename: str) -> bool:
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo, filename)
        return True
    except Exception:  # noqa: BLE001 - absent, or not reachable
        return False


