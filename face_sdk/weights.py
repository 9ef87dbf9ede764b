"""Explicit, strict key-mapping converters for released weights (detector and recognisers).

Every released key must match exactly one rename rule, the renamed keys must be exactly the target model's
state_dict keys, and every shape must agree — otherwise a ``WeightConversionError`` lists what is missing,
unexpected or mismatched. Tensors are carried over unchanged (a test checks bit equality).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

Rename = Union[str, Callable[["re.Match[str]"], str]]
Rule = Tuple[str, Rename]


class WeightConversionError(RuntimeError):
    """A released state_dict does not map one-to-one onto the target model."""


def map_keys(keys: Sequence[str], rules: Sequence[Rule], source: str) -> "OrderedDict[str, str]":
    """``{source_key: target_key}`` using the first rule whose regex matches (string templates use ``\\g<name>``)."""
    compiled = [(re.compile(pattern), rename) for pattern, rename in rules]
    mapping: "OrderedDict[str, str]" = OrderedDict()
    unmatched: List[str] = []
    for key in keys:
        for pattern, rename in compiled:
            match = pattern.fullmatch(key)
            if match:
                mapping[key] = rename(match) if callable(rename) else match.expand(rename)
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise WeightConversionError(f"{source}: {len(unmatched)} key(s) match no conversion rule: {unmatched[:10]}")
    targets: Dict[str, str] = {}
    for key, target in mapping.items():
        if target in targets:
            raise WeightConversionError(f"{source}: keys {targets[target]!r} and {key!r} both map to {target!r}")
        targets[target] = key
    return mapping


def convert_state_dict(source_state: Mapping[str, torch.Tensor], rules: Sequence[Rule], model: nn.Module,
                       source: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source_state`` for ``model``; strict about missing/unexpected keys and shapes."""
    mapping = map_keys(list(source_state), rules, source)
    expected = model.state_dict()
    converted: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unexpected, mismatched = [], []
    for key, target in mapping.items():
        if target not in expected:
            unexpected.append(f"{key} -> {target}")
            continue
        tensor = source_state[key]
        if tensor.shape != expected[target].shape:
            # Old torch saved BatchNorm's num_batches_tracked as shape [1]; the value is kept, only the shape differs.
            if target.endswith("num_batches_tracked") and tensor.numel() == 1:
                tensor = tensor.reshape(expected[target].shape)
            else:
                mismatched.append(f"{key} {tuple(tensor.shape)} -> {target} {tuple(expected[target].shape)}")
                continue
        converted[target] = tensor
    missing = sorted(set(expected) - set(converted) - {m.split(" -> ")[-1] for m in unexpected})
    if unexpected or mismatched or missing:
        raise WeightConversionError(
            f"{source} does not fit {type(model).__name__}: missing {missing[:10]} ({len(missing)}), "
            f"unexpected {unexpected[:10]} ({len(unexpected)}), shape mismatch {mismatched[:10]} ({len(mismatched)})"
        )
    return converted


def load_converted(model: nn.Module, source_state: Mapping[str, torch.Tensor], rules: Sequence[Rule],
                   source: str) -> "OrderedDict[str, str]":
    """Convert, load strictly into ``model`` and return the key mapping used."""
    converted = convert_state_dict(source_state, rules, model, source)
    model.load_state_dict(converted, strict=True)
    return map_keys(list(source_state), rules, source)


# ---------------------------------------------------------------- RetinaFace (biubug6 .pth, FaceX-Zoo SDK .pkl)
_BN_OR_CONV = {"0": "conv", "1": "bn"}
_SSH_BRANCHES = {"conv3X3": "branch3x3", "conv5X5_1": "branch5x5_reduce", "conv5X5_2": "branch5x5",
                 "conv7X7_2": "branch7x7_reduce", "conv7x7_3": "branch7x7"}
_HEADS = {"ClassHead": "class_heads", "BboxHead": "box_heads", "LandmarkHead": "landmark_heads"}
_DW_UNIT = {"0": "depthwise.conv", "1": "depthwise.bn", "3": "pointwise.conv", "4": "pointwise.bn"}

RETINAFACE_RULES: List[Rule] = [
    (r"body\.stage1\.0\.(?P<layer>[01])\.(?P<rest>.+)",
     lambda m: f"trunk.stage1.0.{_BN_OR_CONV[m['layer']]}.{m['rest']}"),
    (r"body\.(?P<stage>stage[123])\.(?P<index>\d+)\.(?P<layer>[0134])\.(?P<rest>.+)",
     lambda m: f"trunk.{m['stage']}.{m['index']}.{_DW_UNIT[m['layer']]}.{m['rest']}"),
    (r"fpn\.output(?P<level>[123])\.(?P<layer>[01])\.(?P<rest>.+)",
     lambda m: f"fpn.lateral.{int(m['level']) - 1}.{_BN_OR_CONV[m['layer']]}.{m['rest']}"),
    (r"fpn\.merge(?P<level>[12])\.(?P<layer>[01])\.(?P<rest>.+)",
     lambda m: f"fpn.smooth.{int(m['level']) - 1}.{_BN_OR_CONV[m['layer']]}.{m['rest']}"),
    (r"ssh(?P<level>[123])\.(?P<branch>conv3X3|conv5X5_1|conv5X5_2|conv7X7_2|conv7x7_3)\.(?P<layer>[01])\.(?P<rest>.+)",
     lambda m: f"context.{int(m['level']) - 1}.{_SSH_BRANCHES[m['branch']]}.{_BN_OR_CONV[m['layer']]}.{m['rest']}"),
    (r"(?P<head>ClassHead|BboxHead|LandmarkHead)\.(?P<level>[012])\.conv1x1\.(?P<rest>weight|bias)",
     lambda m: f"{_HEADS[m['head']]}.{m['level']}.{m['rest']}"),
]


def strip_data_parallel_prefix(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Remove a ``module.`` prefix only when *every* key has it (a DataParallel save)."""
    if state and all(k.startswith("module.") for k in state):
        return OrderedDict((k[len("module."):], v) for k, v in state.items())
    return OrderedDict(state)


# ---------------------------------------------------------------- MobileFaceNets
_PRELU_BLOCK = {"conv": "conv", "bn": "bn", "prelu": "act"}
_BOTTLENECK_SEQUENCE = {"0": "expand.conv", "1": "expand.bn", "2": "expand.act", "3": "depthwise.conv",
                        "4": "depthwise.bn", "5": "depthwise.act", "6": "project.conv", "7": "project.bn"}

# xiaoccer/MobileFaceNet_Pytorch, dict {epoch, net_state_dict} → MobileFaceNetGDC(input_size=(112, 96))
XIAOCCER_RULES: List[Rule] = [
    (r"conv1\.(?P<part>conv|bn|prelu)\.(?P<rest>.+)", lambda m: f"stem.{_PRELU_BLOCK[m['part']]}.{m['rest']}"),
    (r"dw_conv1\.(?P<part>conv|bn|prelu)\.(?P<rest>.+)", lambda m: f"stem_dw.{_PRELU_BLOCK[m['part']]}.{m['rest']}"),
    (r"blocks\.(?P<index>\d+)\.conv\.(?P<layer>[0-7])\.(?P<rest>.+)",
     lambda m: f"blocks.{m['index']}.{_BOTTLENECK_SEQUENCE[m['layer']]}.{m['rest']}"),
    (r"conv2\.(?P<part>conv|bn|prelu)\.(?P<rest>.+)", lambda m: f"head_conv.{_PRELU_BLOCK[m['part']]}.{m['rest']}"),
    (r"linear7\.(?P<part>conv|bn)\.(?P<rest>.+)", r"neck.gdc.\g<part>.\g<rest>"),
    (r"linear1\.(?P<part>conv|bn)\.(?P<rest>.+)", r"neck.embedding.\g<part>.\g<rest>"),
]

# bubbliiiing/arcface-pytorch, keys "arcface.*" → MobileFaceNetGDC(input_size=(112, 112)).
# Its stages are named by position; the flat block index is the stage offset plus the index inside the stage.
_BUBBLIIIING_STAGE_OFFSET = {"conv_23": 0, "conv_3": 1, "conv_34": 5, "conv_4": 6, "conv_45": 12, "conv_5": 13}
_BUBBLIIIING_UNIT = {"conv": "expand", "conv_dw": "depthwise", "project": "project"}


def _bubbliiiing_block(match: "re.Match[str]") -> str:
    index = _BUBBLIIIING_STAGE_OFFSET[match["stage"]] + int(match["index"] or 0)
    return f"blocks.{index}.{_BUBBLIIIING_UNIT[match['unit']]}.{_PRELU_BLOCK[match['part']]}.{match['rest']}"


BUBBLIIIING_RULES: List[Rule] = [
    (r"arcface\.conv1\.(?P<part>conv|bn|prelu)\.(?P<rest>.+)", lambda m: f"stem.{_PRELU_BLOCK[m['part']]}.{m['rest']}"),
    (r"arcface\.conv2_dw\.(?P<part>conv|bn|prelu)\.(?P<rest>.+)",
     lambda m: f"stem_dw.{_PRELU_BLOCK[m['part']]}.{m['rest']}"),
    (r"arcface\.(?P<stage>conv_23|conv_34|conv_45)(?P<index>)\.(?P<unit>conv|conv_dw|project)\.(?P<part>conv|bn|prelu)"
     r"\.(?P<rest>.+)", _bubbliiiing_block),
    (r"arcface\.(?P<stage>conv_3|conv_4|conv_5)\.model\.(?P<index>\d+)\.(?P<unit>conv|conv_dw|project)"
     r"\.(?P<part>conv|bn|prelu)\.(?P<rest>.+)", _bubbliiiing_block),
    (r"arcface\.sep\.(?P<rest>weight)", r"head_conv.conv.\g<rest>"),
    (r"arcface\.sep_bn\.(?P<rest>.+)", r"head_conv.bn.\g<rest>"),
    (r"arcface\.prelu\.(?P<rest>weight)", r"head_conv.act.\g<rest>"),
    (r"arcface\.GDC_dw\.(?P<rest>weight)", r"neck.gdc.conv.\g<rest>"),
    (r"arcface\.GDC_bn\.(?P<rest>.+)", r"neck.gdc.bn.\g<rest>"),
    (r"arcface\.features\.(?P<rest>weight)", r"neck.embedding.conv.\g<rest>"),
    (r"arcface\.last_bn\.(?P<rest>.+)", r"neck.embedding.bn.\g<rest>"),
]

# foamliu/MobileFaceNet, plain state_dict → MobileFaceNetReLU6
_FOAMLIU_BLOCK = {"0.0": "expand.conv", "0.1": "expand.bn", "1.0": "depthwise.conv", "1.1": "depthwise.bn",
                  "2": "project.conv", "3": "project.bn"}
FOAMLIU_RULES: List[Rule] = [
    (r"conv1\.(?P<layer>[01])\.(?P<rest>.+)", lambda m: f"stem.{_BN_OR_CONV[m['layer']]}.{m['rest']}"),
    (r"dw_conv\.depthwise\.(?P<rest>weight)", r"stem_dw.depthwise.conv.\g<rest>"),
    (r"dw_conv\.bn1\.(?P<rest>.+)", r"stem_dw.depthwise.bn.\g<rest>"),
    (r"dw_conv\.pointwise\.(?P<rest>weight)", r"stem_dw.pointwise.conv.\g<rest>"),
    (r"dw_conv\.bn2\.(?P<rest>.+)", r"stem_dw.pointwise.bn.\g<rest>"),
    (r"features\.(?P<index>\d+)\.conv\.(?P<layer>0\.0|0\.1|1\.0|1\.1|2|3)\.(?P<rest>.+)",
     lambda m: f"blocks.{m['index']}.{_FOAMLIU_BLOCK[m['layer']]}.{m['rest']}"),
    (r"conv2\.(?P<layer>[01])\.(?P<rest>.+)", lambda m: f"head_conv.{_BN_OR_CONV[m['layer']]}.{m['rest']}"),
    (r"gdconv\.depthwise\.(?P<rest>weight)", r"neck.gdc.conv.\g<rest>"),
    (r"gdconv\.bn\.(?P<rest>.+)", r"neck.gdc.bn.\g<rest>"),
    (r"conv3\.(?P<rest>weight|bias)", r"neck.embedding.conv.\g<rest>"),
    (r"bn\.(?P<rest>.+)", r"neck.embedding.bn.\g<rest>"),
]


# ---------------------------------------------------------------- command line (the catalogue: face_sdk.catalog)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m face_sdk.weights list`` | ``verify PATH [--pairs BIN] [--device cpu]`` → JSON on stdout."""
    import argparse
    import json
    import sys

    from face_sdk.catalog import catalog_rows, verify

    parser = argparse.ArgumentParser(prog="python -m face_sdk.weights",
                                     description="list the weight files the toolbox can use, or verify one")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every known weight file: architecture, data, input contract, sha256, source")
    check = sub.add_parser("verify", help="check a file's sha256 against the catalogue and run it on real data")
    check.add_argument("path")
    check.add_argument("--pairs", help="insightface .bin of aligned pairs to score (default: ../shared's 10 LFW "
                                       "pairs)")
    check.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.command == "list":
        json.dump(catalog_rows(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    result = verify(args.path, args.pairs, args.device)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    print(f"{args.path}: {'verified' if result['ok'] else 'NOT verified'}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    from utils.cli import run_cli
    raise SystemExit(run_cli(main))
