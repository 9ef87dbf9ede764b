"""``data.decode: device``: loader workers only read the JPEG bytes; the batch is decoded where the model runs
(``torchvision.io.decode_jpeg`` on the GPU, nvJPEG) and flipped there. For clean-image training (ArcFace and the
other conventional modes) when the CPU loader is the limit; occlusion views are rendered from CPU pixels, so
``data.occlusion`` needs ``data.decode: cpu`` (the default). torchvision 0.29 marks its image decoders deprecated in
favour of TorchCodec; they work in the pinned range."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from data_processor.datasets import DatasetWrapper, FaceDataset, draws_flip
from utils.registry import ConfigError

JPEG_MAGIC = b"\xff\xd8\xff"
DECODE_CHOICES = ("cpu", "device")


class EncodedJPEGDataset(DatasetWrapper):
    """Samples ``{"jpeg": uint8 file bytes, "label", "index", "flipped", "path"}`` of a FaceDataset; the flip is drawn
    exactly as ``FlipDataset`` draws it (``draws_flip``) and applied after decoding (``decode_batch``). Batch the
    samples with ``collate_fn`` (the byte strings differ in length)."""

    def __init__(self, base: FaceDataset, flip_probability: float = 0.0, seed: int = 0) -> None:
        if not isinstance(base, FaceDataset):
            raise ConfigError(f"data.decode=device needs a dataset of image files (ImageListDataset, "
                              f"ImageFolderDataset), got {type(base).__name__}")
        self.base = base
        self.probability = float(flip_probability)
        self.seed = int(seed)
        self.epoch = 0
        self.trained_families: List[str] = []  # no occlusion: no occluder family seen in training

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        relative, label = self.base.items[index]
        path = self.base.root / relative
        data = Path(path).read_bytes()
        if not data.startswith(JPEG_MAGIC):
            raise ValueError(f"{path}: data.decode=device decodes JPEG files only; this file is not a JPEG "
                             f"(use data.decode=cpu)")
        return {"jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8), "label": torch.tensor(label),
                "index": index, "flipped": torch.tensor(draws_flip(self.seed, self.epoch, index, self.probability)),
                "path": str(path)}

    @staticmethod
    def collate_fn(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """A batch: the byte tensors as a list, the rest stacked."""
        return {"jpeg": [s["jpeg"] for s in samples], "label": torch.stack([s["label"] for s in samples]),
                "index": torch.tensor([s["index"] for s in samples]),
                "flipped": torch.stack([s["flipped"] for s in samples]), "path": [s["path"] for s in samples]}


def decode_batch(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """``batch`` with ``image`` = the decoded uint8 RGB ``[B, 3, H, W]`` on ``device`` (flipped where ``flipped``);
    the bytes and paths dropped. Images of different sizes are an error naming the first odd file."""
    images = decode_jpeg(batch["jpeg"], mode=ImageReadMode.RGB, device=device)
    shape = images[0].shape
    odd = [path for path, image in zip(batch["path"], images) if image.shape != shape]
    if odd:
        raise ValueError(f"{odd[0]}: decoded to {tuple(images[batch['path'].index(odd[0])].shape)}, the batch's "
                         f"first image to {tuple(shape)}; data.decode=device needs images of one size (aligned faces)")
    stacked = torch.stack(images)
    flipped = batch["flipped"].to(device, non_blocking=True).view(-1, 1, 1, 1)
    out = {key: value for key, value in batch.items() if key not in ("jpeg", "path")}
    out["image"] = torch.where(flipped, stacked.flip(-1), stacked)
    return out
