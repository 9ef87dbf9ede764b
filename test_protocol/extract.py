"""Feature extraction shared by every protocol: batched, any device, optional flip views, one pass.

Images are uint8 RGB (paths or a Dataset); ``data_processor.preprocess.preprocess`` is the only normalisation.
``extract_views`` returns the plain embeddings and, when asked, the embeddings of the horizontally flipped images
from the same forward pass, so flip-fused and no-flip protocols on one image set need one extraction.

Flip fusion (``flip``):
- ``none``: the plain embedding;
- ``sum``: plain + flipped, each L2-normalised first (the two views count equally);
- ``norm_weighted``: plain + flipped as they come out of the model, i.e. each unit view weighted by its norm
  (AdaFace's fusion; also what insightface's ``verification.py`` computes, since it sums raw outputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from data_processor.image_io import read_image
from data_processor.preprocess import PreprocessSpec, preprocess
from utils.progress import progress as progress_bar

FLIP_MODES = ("none", "sum", "norm_weighted")
ImageSource = Union[Sequence[Union[str, Path]], Dataset, Sequence[Any]]


def check_flip(flip: str) -> str:
    if flip not in FLIP_MODES:
        raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
    return flip


@dataclass
class EmbeddingViews:
    """Embeddings of the images as given (``plain``) and of their mirror images (``flipped``, optional)."""

    plain: torch.Tensor
    flipped: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.plain.shape[0]

    def select(self, index: Any) -> "EmbeddingViews":
        return EmbeddingViews(self.plain[index], None if self.flipped is None else self.flipped[index])

    def fuse(self, flip: str) -> torch.Tensor:
        """One embedding per image according to ``flip`` (see the module docstring)."""
        if check_flip(flip) == "none":
            return self.plain
        if self.flipped is None:
            raise ValueError(f"flip={flip!r} needs the flipped view: extract with with_flip=True")
        if flip == "sum":
            return F.normalize(self.plain, dim=1) + F.normalize(self.flipped, dim=1)
        return self.plain + self.flipped


class ImagePathDataset(Dataset):
    """Reads image files as uint8 RGB ``[3, H, W]`` tensors."""

    def __init__(self, paths: Sequence[Union[str, Path]]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_chw_tensor(read_image(self.paths[index]))


def to_chw_tensor(item: Any) -> torch.Tensor:
    """Sample dict, HxWx3 numpy array or [3,H,W] tensor (uint8 RGB) → uint8 [3,H,W] tensor."""
    if isinstance(item, dict):
        item = item["image"]
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {item.shape}")
        item = torch.from_numpy(np.ascontiguousarray(item.transpose(2, 0, 1)))
    if not isinstance(item, torch.Tensor) or item.dim() != 3 or item.shape[0] != 3:
        raise ValueError(f"expected a uint8 [3,H,W] RGB image, got {type(item).__name__} "
                         f"{tuple(getattr(item, 'shape', ()))}")
    return item


def _collate(items: List[Any]) -> Union[torch.Tensor, List[torch.Tensor]]:
    images = [to_chw_tensor(item) for item in items]
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    return images  # mixed sizes: preprocess resizes each image to the model's input size


def _forward(model: torch.nn.Module, batch: torch.Tensor, spec: PreprocessSpec, device: torch.device,
             with_flip: bool, channels_last: bool) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if with_flip:
        batch = torch.cat([batch, batch.flip(-1)])
    inputs = preprocess(batch, spec)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return model(inputs).float()


def prefers_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """True for a convolutional PyTorch model on the CPU, where channels-last inputs run ~1.5x faster (oneDNN) with
    the same embeddings up to float rounding; models that are not ``nn.Conv2d`` networks get contiguous inputs."""
    return device.type == "cpu" and any(isinstance(module, torch.nn.Conv2d) for module in model.modules())


@torch.no_grad()
def extract_views(model: torch.nn.Module, images: ImageSource, spec: PreprocessSpec, device: Union[str, torch.device],
                  batch_size: int = 128, with_flip: bool = False, num_workers: int = 0,
                  desc: str = "extract", progress: bool = True) -> EmbeddingViews:
    """Embed every image (in order) with ``model`` in eval mode; the flipped view rides in the same batch.

    ``images``: image paths, a Dataset, or a list of in-memory images (uint8 RGB arrays/tensors or sample dicts).
    """
    device = torch.device(device)
    paths = not isinstance(images, Dataset) and len(images) > 0 and isinstance(images[0], (str, Path))
    dataset = ImagePathDataset(images) if paths else images  # a Dataset or a list of in-memory images
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval().to(device)
    channels_last = prefers_channels_last(model, device)
    plain, flipped = [], []
    try:
        for batch in progress_bar(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            if isinstance(batch, list):
                outputs = torch.cat([_forward(model, image[None], spec, device, with_flip, channels_last)
                                     for image in batch])
                count = len(batch)
                outputs = outputs.view(count, 2 if with_flip else 1, -1).transpose(0, 1).reshape(-1, outputs.shape[1])
            else:
                count = batch.shape[0]
                outputs = _forward(model, batch, spec, device, with_flip, channels_last)
            plain.append(outputs[:count].cpu())
            if with_flip:
                flipped.append(outputs[count:].cpu())
    finally:
        model.train(was_training)
    if not plain:
        raise ValueError("extract_views: no images to embed")
    return EmbeddingViews(torch.cat(plain), torch.cat(flipped) if with_flip else None)


def extract_embeddings(model: torch.nn.Module, images: ImageSource, spec: PreprocessSpec,
                       device: Union[str, torch.device], batch_size: int = 128, flip: str = "none",
                       num_workers: int = 0) -> torch.Tensor:
    """``[N, D]`` float32 embeddings (not normalised; fused per ``flip``) of ``images`` in order."""
    views = extract_views(model, images, spec, device, batch_size, with_flip=check_flip(flip) != "none",
                          num_workers=num_workers)
    return views.fuse(flip)
