"""Recogniser: any registered backbone + its ``ModelMeta`` → L2-normalised embeddings of aligned uint8 RGB crops.

Normalisation goes through ``data_processor.preprocess.preprocess`` with ``meta.preprocess`` — nowhere else.
Crops must already be aligned to ``meta.template`` at ``meta.preprocess.input_size``; the one exception is
112×112 ArcFace crops given to a 112×96 SphereFace model, which are cut to the SphereFace crop exactly (the two
templates differ by an 8-pixel shift), so one aligned data set serves every released model.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from backbone import build_backbone
from backbone.base import FaceBackbone
from data_processor.preprocess import preprocess
from face_sdk.model_meta import ModelMeta, read_model_meta
from face_sdk.released import RELEASED_RECOGNIZERS, load_released_recognizer
from utils.checkpoint import load_backbone_weights, load_checkpoint

Crops = Union[torch.Tensor, np.ndarray, Sequence[np.ndarray]]


class Recognizer:
    """Batched embedding extraction for one backbone and its input contract."""

    def __init__(self, backbone: FaceBackbone, meta: ModelMeta, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.meta = meta
        self.spec = meta.preprocess
        self.batch_size = int(batch_size)

    @property
    def embedding_dim(self) -> int:
        return int(self.meta.embedding_dim)

    def as_batch(self, crops: Crops) -> torch.Tensor:
        """uint8 RGB ``[N, 3, H, W]`` tensor at the model's input size from arrays (H×W×3) or a tensor."""
        if isinstance(crops, torch.Tensor):
            batch = crops
        elif isinstance(crops, np.ndarray) and crops.ndim == 4:
            batch = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
        else:
            arrays = list(crops)
            for index, crop in enumerate(arrays):
                if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3:
                    raise ValueError(f"crop {index}: expected a uint8 RGB H×W×3 array, got "
                                     f"{getattr(crop, 'shape', type(crop).__name__)}")
            if not arrays:
                return torch.zeros((0, 3, *self.spec.input_size), dtype=torch.uint8)
            batch = torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected crops [N, 3, H, W] or [N, H, W, 3], got {tuple(batch.shape)}")
        size = tuple(batch.shape[-2:])
        if size == (112, 112) and self.spec.input_size == (112, 96) and self.spec.template == "sphereface_112x96":
            batch = batch[..., 8:104]
        elif size != self.spec.input_size:
            raise ValueError(f"crops are {size[0]}×{size[1]} but model '{self.meta.name or self.meta.arch}' expects "
                             f"{self.spec.input_size[0]}×{self.spec.input_size[1]} crops aligned to "
                             f"{self.spec.template}")
        return batch

    @torch.inference_mode()
    def embed(self, crops: Crops, flip: bool = False, normalize: bool = True) -> np.ndarray:
        """Embeddings ``[N, D]`` (float32). ``flip`` adds the embedding of the mirrored crop before normalising."""
        batch = self.as_batch(crops)
        outputs: List[torch.Tensor] = []
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = preprocess(batch[start:start + self.batch_size].to(self.device), self.spec)
            features = self.backbone(chunk)
            if flip:
                features = features + self.backbone(chunk.flip(-1))
            outputs.append(F.normalize(features, dim=1) if normalize else features)
        if not outputs:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return torch.cat(outputs).float().cpu().numpy()

    def similarity(self, crop_a: np.ndarray, crop_b: np.ndarray) -> float:
        """Cosine similarity of two aligned crops."""
        a, b = self.embed([crop_a, crop_b])
        return float(np.dot(a, b))


def load_exported_recognizer(path: str | Path) -> Tuple[FaceBackbone, ModelMeta]:
    """An export folder (``model_meta.json`` + state_dict named by ``meta.weights``) or the json path itself."""
    path = Path(path)
    meta_path = path / "model_meta.json" if path.is_dir() else path
    meta = read_model_meta(meta_path)
    backbone = build_backbone(meta.backbone_config)
    weights = meta_path.parent / meta.weights
    load_backbone_weights(backbone, load_checkpoint(weights), source=str(weights))
    return backbone.eval(), meta


def load_recognizer(name_or_path: str | Path, device: str | torch.device = "cpu",
                    weights_dir: Optional[Path] = None, batch_size: int = 64) -> Recognizer:
    """A ``Recognizer`` from a released model name/file or an export folder / ``model_meta.json``."""
    path = Path(name_or_path)
    if str(name_or_path) not in RELEASED_RECOGNIZERS and (path.is_dir() or path.suffix == ".json"):
        backbone, meta = load_exported_recognizer(path)
    else:
        backbone, meta = load_released_recognizer(name_or_path, weights_dir)
    return Recognizer(backbone, meta, device, batch_size)
