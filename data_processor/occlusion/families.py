"""Occluder families: every occlusion type belongs to exactly one named family (``clean`` belongs to none).

A family groups the types that share a look and, mostly, drawing code, so that a model can be trained without a
whole family and judged on it afterwards ("held out")::

    partial          the landmark-guided partial views (partial_views.py)
    geometric        random shapes and GFRO's eye/mouth boxes (shapes.py)
    upper_accessory  eyeglasses, sunglasses, hat (occluders.py)
    lower_accessory  mask, scarf, hand (occluders.py)
    object           photographic cut-outs and other people's faces (objects.py: no code shared with the above)
    user_art         user RGBA occluder packs (rgba_occluder.py)

``gfro_box`` (the GFRO release's white eye/mouth rectangle) is in ``geometric``: it is a filled rectangle painted by
the same code as ``block``, so a model trained on it has seen axis-aligned blocks. Counting it as ``geometric`` keeps
``held_out`` strict: a set is held out only when no type of its family was in training.

This table is the one place the families are defined; the training switch (``data.occlusion.exclude_families``),
the run record (``trained_families``) and the evaluation rows (``seen_or_held_out``) read it.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from utils.registry import ConfigError

OCCLUDER_FAMILIES: Dict[str, Tuple[str, ...]] = {
    "partial": ("partial_upper", "partial_lower", "partial_left", "partial_right", "partial_eyes", "partial_mouth",
                "partial_central", "partial_random"),
    "geometric": ("block", "ellipse", "polygon", "gfro_box"),
    "upper_accessory": ("eyeglasses", "sunglasses", "hat"),
    "lower_accessory": ("mask", "scarf", "hand"),
    "object": ("object_photo", "crowd"),
    "user_art": ("rgba",),
}
FAMILIES: Tuple[str, ...] = tuple(OCCLUDER_FAMILIES)
NO_FAMILY = ("clean",)  # the identity view: no occluder, no family
CLEAN_NAMES = ("clean", "none", "")  # what a clean set / an unoccluded image is called (builder manifests: "none")
SEEN, HELD_OUT, CLEAN = "seen", "held_out", "clean"

_FAMILY_OF: Dict[str, str] = {kind: family for family, kinds in OCCLUDER_FAMILIES.items() for kind in kinds}


def family_of(kind: str) -> Optional[str]:
    """The family of occlusion type ``kind``; ``None`` for ``clean``. An unknown type is a ConfigError."""
    if kind in NO_FAMILY:
        return None
    if kind not in _FAMILY_OF:
        raise ConfigError(f"occlusion type {kind!r} has no family; known types: {', '.join(sorted(_FAMILY_OF))} "
                         f"(families are defined in data_processor/occlusion/families.py)")
    return _FAMILY_OF[kind]


def family_types(family: str) -> Tuple[str, ...]:
    """The types of ``family`` (ConfigError naming the valid families when it is unknown)."""
    if family not in OCCLUDER_FAMILIES:
        raise ConfigError(f"unknown occluder family {family!r}; valid: {', '.join(FAMILIES)}")
    return OCCLUDER_FAMILIES[family]


def check_families(names: Iterable[str], where: str = "exclude_families") -> Tuple[str, ...]:
    """``names`` as a tuple after checking each is a family; ConfigError naming ``where`` and the valid ones."""
    if isinstance(names, str):
        names = [names]
    names = tuple(names)
    unknown = [name for name in names if name not in OCCLUDER_FAMILIES]
    if unknown:
        raise ConfigError(f"{where}: unknown occluder famil{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))}; valid: {', '.join(FAMILIES)}")
    return names


def families_of(kinds: Iterable[str]) -> List[str]:
    """Sorted families of ``kinds`` (types or family names; ``clean`` / ``none`` contribute nothing)."""
    families = set()
    for name in kinds:
        if name in CLEAN_NAMES:
            continue
        families.add(name if name in OCCLUDER_FAMILIES else family_of(name))
    return sorted(families)


Occlusion = Union[None, str, Sequence[str]]


def seen_or_held_out(occlusion: Occlusion, trained_families: Iterable[str]) -> str:
    """``"seen"``, ``"held_out"`` or ``"clean"`` for a test set's occlusion and a model's trained families.

    ``occlusion``: a type (``"mask"``), a family (``"object"``), a comma-separated string or a list of them (e.g.
    the ``kinds`` of an occluded set's manifest.json); ``None`` / ``"clean"`` / ``"none"`` / empty → ``"clean"``.
    ``trained_families``: what the model trained on (``trained_families(data.occlusion)``, recorded in the run).
    A set whose types span several families is ``held_out`` only when *none* of them was trained on, otherwise
    ``seen`` — a held-out claim never rests on a partly seen set.
    """
    if occlusion is None:
        return CLEAN
    kinds = [part.strip() for part in occlusion.split(",")] if isinstance(occlusion, str) else list(occlusion)
    families = families_of(kinds)
    if not families:
        return CLEAN
    trained = set(check_families(list(trained_families), "trained_families"))
    return SEEN if trained.intersection(families) else HELD_OUT
