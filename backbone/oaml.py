"""OAML (Occlusion-Aware Metric Learning, methods.md §6): AdaFace embedding + occlusion head + QAConv matching head.

    image → trunk.forward_features → map f [B, C, h, w]            (7×7 for 112×112 inputs)
        ├─ trunk.forward_neck(f)                                 → global embedding e [B, D] (AdaFace is trained on it)
        ├─ OcclusionHead(f): Conv3×3(C→128, no bias) → BN → ReLU → Conv1×1(128→1) → sigmoid
        │                                                        → visibility map o [B, 1, h, w] (1 = visible)
        └─ per-location L2 normalisation of f over channels      → local features f̂ [B, C, h, w]

    QAConv (``QAConvMatcher``), for a probe p and a gallery g:
        C[s, r] = ⟨f̂_p(:, s), f̂_g(:, r)⟩ · o_p[s] · o_g[r]          (occlusion weighting before max-pooling)
        x = [max_r C[s, r] for every s ; max_s C[s, r] for every r]  → [2·hw]
        score = BN1d(1)(Linear(2hw → 1, weights 1/hw)(BN1d(1)(x)))

Two registered networks share one state_dict layout (``trunk.*``, ``occlusion_head.*``, ``pair_scorer.*``):

- ``OAMLNet``: what the Trainer trains. ``forward`` = the global embedding (``feat_dim`` = D, what the AdaFace head
  is built for); ``forward_train`` adds the feature map for ``training_mode/oaml.py``, which trains the occlusion head
  and the QAConv matcher.
- ``OAMLDescriptorNet``: what is evaluated and exported (``OAMLNet.descriptor_model()`` is a twin sharing the
  modules). ``forward`` = one packed descriptor per image, ``[e (D) | f̂ flattened (C·hw) | o flattened (hw)]``
  (``feat_dim`` = D + C·hw + hw), and ``pair_scorer`` (``OAMLPairScorer``) scores two batches of descriptors
  pair by pair → ``[N, 2]`` = (cosine of the global embeddings, QAConv score). The protocol min-max normalises each
  column over all pairs of a set and fuses them 0.5/0.5 (methods.md §6.4, ``test_protocol/verification.py``).

Departures from the public code / report *(ours)*:
- The trunk is any toolbox backbone (MobileFaceNet on CPU, IResNet-50 in the GPU preset) with its own neck
  (BN2d → Dropout → Linear → BN1d with an affine BN1d; the public AdaFace output layer ends in BN1d(affine=False)
  and the backbone returns e/‖e‖ plus ‖e‖ — the toolbox's AdaFace head takes the raw e and computes the norm).
- The class memory ``class_embed`` [num_classes, C, h, w] and its graph-sampled class-level scores are not built:
  in the public code its loss is computed but not added to the total, so it does not change training.
- Flip fusion at test time (``OAMLPairScorer.fuse_views``): the mirrored view's local map and visibility map are
  mirrored back and averaged with the plain view's (the public evaluation scores single views).
- The 7×7 final map (README / tech report); the HEAD ``train_val.py`` taps 14×14 Block-3 features instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone
from utils.registry import ConfigError

SCORE_NAMES = ("global", "qaconv")
FUSION_WEIGHTS = (0.5, 0.5)  # methods.md §6.4: 0.5·AdaFace + 0.5·QAConv after per-set min-max normalisation
FLIP_FUSIONS = ("sum", "norm_weighted")


class OcclusionHead(nn.Module):
    """Map ``[B, C, h, w]`` → visibility map ``[B, 1, h, w]`` in [0, 1] (1 = visible), Kaiming-initialised."""

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.out = nn.Conv2d(hidden, 1, 1)
        for conv in (self.conv, self.out):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.out.bias)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(F.relu(self.bn(self.conv(feature_map)))))


class QAConvMatcher(nn.Module):
    """Occlusion-weighted QAConv score of local-feature pairs (module docstring).

    Inputs are per-location L2-normalised maps flattened to ``[N, C, hw]`` and visibility weights ``[N, hw]``.
    ``all_pairs`` scores every probe against every gallery entry (``[P, G]``, training: the batch against itself);
    ``paired`` scores row i of one batch against row i of the other (``[N]``, evaluation).
    """

    def __init__(self, feature_size: Tuple[int, int]) -> None:
        super().__init__()
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        cells = self.feature_size[0] * self.feature_size[1]
        self.bn = nn.BatchNorm1d(1)
        self.fc = nn.Linear(2 * cells, 1)
        self.logit_bn = nn.BatchNorm1d(1)
        nn.init.constant_(self.fc.weight, 1.0 / cells)
        nn.init.zeros_(self.fc.bias)

    def score_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[M, 2hw]`` max-pooled similarities → ``[M]`` scores (BN1d(1) → Linear → BN1d(1))."""
        hidden = self.bn(pooled.unsqueeze(1)).squeeze(1)
        return self.logit_bn(self.fc(hidden)).squeeze(1)

    def all_pairs(self, probe: torch.Tensor, gallery: torch.Tensor, probe_visibility: torch.Tensor,
                  gallery_visibility: torch.Tensor) -> torch.Tensor:
        """``[P, C, hw]``, ``[G, C, hw]``, ``[P, hw]``, ``[G, hw]`` → ``[P, G]`` scores."""
        correlation = torch.einsum("pcs,gcr->pgsr", probe, gallery)
        correlation = correlation * probe_visibility[:, None, :, None] * gallery_visibility[None, :, None, :]
        pooled = torch.cat([correlation.amax(dim=3), correlation.amax(dim=2)], dim=2)  # [P, G, 2hw]
        return self.score_pooled(pooled.flatten(0, 1)).view(probe.shape[0], gallery.shape[0])

    def paired(self, first: torch.Tensor, second: torch.Tensor, first_visibility: torch.Tensor,
               second_visibility: torch.Tensor) -> torch.Tensor:
        """``[N, C, hw]`` twice and ``[N, hw]`` twice → ``[N]`` scores of the pairs (first[i], second[i])."""
        correlation = torch.einsum("ncs,ncr->nsr", first, second)
        correlation = correlation * first_visibility[:, :, None] * second_visibility[:, None, :]
        return self.score_pooled(torch.cat([correlation.amax(dim=2), correlation.amax(dim=1)], dim=1))


class OAMLPairScorer(nn.Module):
    """Scores pairs of packed OAML descriptors: ``forward(first [N, P], second [N, P]) → [N, 2]``.

    Column 0: cosine of the global embeddings; column 1: the occlusion-weighted QAConv score (``QAConvMatcher``, in
    eval mode its BatchNorms use running statistics). ``score_names`` name the columns, ``fusion_weights`` are the
    weights of the fused score after the protocol's per-set min-max normalisation, ``score_name`` labels result rows.
    """

    score_names = SCORE_NAMES
    fusion_weights = FUSION_WEIGHTS
    score_name = "oaml_fused"

    def __init__(self, embedding_dim: int, channels: int, feature_size: Tuple[int, int]) -> None:
        super().__init__()
        self.embedding_dim, self.channels = int(embedding_dim), int(channels)
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        self.cells = self.feature_size[0] * self.feature_size[1]
        self.descriptor_dim = self.embedding_dim + self.channels * self.cells + self.cells
        self.matcher = QAConvMatcher(self.feature_size)

    def unpack(self, descriptors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[N, P]`` → (global ``[N, D]``, local ``[N, C, hw]``, visibility ``[N, hw]``)."""
        if descriptors.dim() != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"OAML descriptors must be [N, {self.descriptor_dim}] (D {self.embedding_dim} + "
                             f"C·hw {self.channels}·{self.cells} + hw {self.cells}), got {list(descriptors.shape)}")
        local_end = self.embedding_dim + self.channels * self.cells
        return (descriptors[:, :self.embedding_dim],
                descriptors[:, self.embedding_dim:local_end].reshape(-1, self.channels, self.cells),
                descriptors[:, local_end:])

    def global_part(self, descriptors: torch.Tensor) -> torch.Tensor:
        """The raw global embeddings ``[N, D]`` (what embedding-only protocols use)."""
        return self.unpack(descriptors)[0]

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        global_a, local_a, visibility_a = self.unpack(first)
        global_b, local_b, visibility_b = self.unpack(second)
        cosine = (F.normalize(global_a, dim=1) * F.normalize(global_b, dim=1)).sum(dim=1)
        qaconv = self.matcher.paired(local_a, local_b, visibility_a, visibility_b)
        return torch.stack([cosine, qaconv], dim=1)

    def fuse_views(self, plain: torch.Tensor, flipped: torch.Tensor, flip: str) -> torch.Tensor:
        """Descriptors of an image and of its mirror image → one descriptor: global embeddings fused as ``flip``
        (``sum``: of unit vectors; ``norm_weighted``: raw sum), the mirror's local and visibility maps mirrored back
        and averaged with the plain view's (local features re-normalised per location)."""
        if flip not in FLIP_FUSIONS:
            raise ValueError(f"OAMLPairScorer.fuse_views: flip must be one of {FLIP_FUSIONS}, got {flip!r}")
        height, width = self.feature_size
        global_p, local_p, visibility_p = self.unpack(plain)
        global_f, local_f, visibility_f = self.unpack(flipped)
        if flip == "sum":
            global_p, global_f = F.normalize(global_p, dim=1), F.normalize(global_f, dim=1)
        mirrored_local = local_f.reshape(-1, self.channels, height, width).flip(-1).reshape_as(local_f)
        mirrored_visibility = visibility_f.reshape(-1, height, width).flip(-1).reshape_as(visibility_f)
        local = F.normalize(local_p + mirrored_local, dim=1)
        return torch.cat([global_p + global_f, local.flatten(1), 0.5 * (visibility_p + mirrored_visibility)], dim=1)


def build_trunk(trunk: Union[None, Mapping[str, Any], FaceBackbone]) -> FaceBackbone:
    """The trunk from a backbone config (default MobileFaceNet) or an already built ``FaceBackbone``."""
    if trunk is None:
        trunk = {"type": "MobileFaceNet"}
    if isinstance(trunk, Mapping):
        try:
            trunk = BACKBONES.build(trunk, where="backbone.trunk")
        except ConfigError as error:
            raise ConfigError(f"backbone.trunk: {error}") from None
    if not isinstance(trunk, FaceBackbone):
        raise ConfigError(f"backbone.trunk must be a backbone config such as {{type: MobileFaceNet}} or a "
                          f"FaceBackbone, got {type(trunk).__name__}")
    return trunk


@BACKBONES.register()
class OAMLNet(FaceBackbone):
    """OAML's network for training (module docstring): trunk + occlusion head + QAConv pair scorer.

    ``forward`` returns the global embedding ``[B, D]`` (the trunk's, as the AdaFace branch); the occlusion head
    and the matcher are trained by ``training_mode.type: OAMLTraining`` and used through ``descriptor_model()``.

    Args:
        trunk: backbone config (default ``{type: MobileFaceNet}``; ``width`` / ``input_size`` go there) or a built
            ``FaceBackbone``; its final map is the local-feature map (7×7 at 112×112).
        occlusion_hidden: channels of the occlusion head's hidden layer (128 as the public code).
    """

    def __init__(self, trunk: Union[None, Mapping[str, Any], FaceBackbone] = None,
                 occlusion_hidden: int = 128) -> None:
        super().__init__()
        if int(occlusion_hidden) <= 0:
            raise ConfigError(f"backbone.occlusion_hidden must be a positive integer, got {occlusion_hidden!r}")
        self.trunk = build_trunk(trunk)
        self.feat_dim = int(self.trunk.feat_dim)
        self.embedding_dim = self.feat_dim
        self.feature_channels = int(self.trunk.feature_channels)
        self.feature_size = tuple(self.trunk.feature_size)
        self.occlusion_head = OcclusionHead(self.feature_channels, int(occlusion_hidden))
        self.pair_scorer = OAMLPairScorer(self.embedding_dim, self.feature_channels, self.feature_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_neck(feature_map)

    def forward_train(self, x: torch.Tensor) -> Dict[str, Any]:
        """``{"embedding" [B, D], "feature_map" [B, C, h, w], "aux_losses": {}, "stats": {}}``."""
        feature_map = self.forward_features(x)
        return {"embedding": self.forward_neck(feature_map), "feature_map": feature_map, "aux_losses": {},
                "stats": {}}

    def pack(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Map → packed descriptor ``[global | per-location L2-normalised map | visibility map]``."""
        embedding = self.trunk.forward_neck(feature_map)
        local = F.normalize(feature_map.float(), dim=1).flatten(1)
        visibility = self.occlusion_head(feature_map).float().flatten(1)
        return torch.cat([embedding.float(), local, visibility], dim=1)

    def descriptor_model(self) -> "OAMLDescriptorNet":
        """The evaluated / exported twin: same modules (shared, not copied), descriptor output."""
        return OAMLDescriptorNet.sharing(self)


@BACKBONES.register()
class OAMLDescriptorNet(OAMLNet):
    """OAML's evaluated and exported network: ``OAMLNet`` whose ``forward`` is the packed descriptor.

    Same arguments and state_dict as ``OAMLNet``; ``feat_dim`` is the descriptor size D + C·hw + hw and
    ``pair_scorer`` scores pairs of descriptors (module docstring). Exports record this class as their ``arch``.
    """

    export_arch = "OAMLDescriptorNet"

    def __init__(self, trunk: Union[None, Mapping[str, Any], FaceBackbone] = None,
                 occlusion_hidden: int = 128) -> None:
        super().__init__(trunk, occlusion_hidden)
        self.feat_dim = self.pair_scorer.descriptor_dim

    @classmethod
    def sharing(cls, net: OAMLNet) -> "OAMLDescriptorNet":
        """A descriptor network whose modules are ``net``'s own (training ``net`` changes it too)."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.trunk, model.occlusion_head, model.pair_scorer = net.trunk, net.occlusion_head, net.pair_scorer
        model.embedding_dim, model.feature_channels = net.embedding_dim, net.feature_channels
        model.feature_size = net.feature_size
        model.feat_dim = net.pair_scorer.descriptor_dim
        model.train(net.training)
        return model

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.pack(feature_map)

    def forward_train(self, x: torch.Tensor) -> Dict[str, Any]:
        return {"embedding": self(x), "aux_losses": {}, "stats": {}}


def export_pair_scorer_onnx(scorer: OAMLPairScorer, path: Union[str, Path], opset: int = 18) -> Path:
    """The matching head as its own ONNX graph: inputs ``first`` / ``second`` ``[N, P]`` descriptors (dynamic N),
    output ``scores`` ``[N, 2]`` (global cosine, QAConv score), eval-mode BatchNorms (torchscript exporter)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scorer = scorer.eval()
    example = torch.randn(2, scorer.descriptor_dim)
    torch.onnx.export(scorer, (example, example.flip(0)), str(path), input_names=["first", "second"],
                      output_names=["scores"], opset_version=opset, dynamo=False,
                      dynamic_axes={"first": {0: "pairs"}, "second": {0: "pairs"}, "scores": {0: "pairs"}})
    return path

