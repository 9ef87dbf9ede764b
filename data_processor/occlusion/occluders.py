"""Drawn face occluders: surgical/cloth mask, eyeglasses, sunglasses, hat/cap, scarf and a hand-like blob.

Each design lives in ArcFace-template coordinates (eyes (38.3, 51.7) / (73.5, 51.5), nose (56.0, 71.7), mouth
corners (41.5, 92.4) / (70.7, 92.2)) and is placed on the image through its own landmarks plus a random scale,
rotation and shift. Guarantees the tests check: a mask hides the nose tip and both mouth corners but not the eyes;
sunglasses hide both eye points; eyeglasses hide only their frame (eyes visible); a hat hides the top of the head
but not the eyes; a scarf hides both mouth corners but not the eyes.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from data_processor.occlusion.base import OCCLUDERS
from data_processor.occlusion.geometry import TEMPLATE, ellipse_points, rounded_rect_points
from data_processor.occlusion.render import Part, placement_matrix, render_parts
from data_processor.occlusion.textures import (DARK_LENSES, FRAME_COLOURS, SKIN_TONES, TEXTURE_STYLES, pick_colour,
                                               jitter_colour)

Image = np.ndarray
Result = Tuple[np.ndarray, np.ndarray]
SCALE_RANGE = (0.94, 1.06)
MASK_COLOURS = ((165, 205, 230), (235, 238, 240), (35, 35, 40), (240, 190, 205), (120, 200, 190))
LEFT_EYE, RIGHT_EYE = TEMPLATE[0], TEMPLATE[1]


def _choose(rng: np.random.Generator, options: Sequence[str], style: Optional[str], what: str) -> str:
    if style is None:
        return options[int(rng.integers(len(options)))]
    if style not in options:
        raise ValueError(f"{what} style must be one of {tuple(options)}, got {style!r}")
    return style


def _darker(colour: Sequence[int], factor: float = 0.7) -> np.ndarray:
    return (np.asarray(colour, dtype=np.float64) * factor).astype(np.int32)


def _mirror(points: np.ndarray) -> np.ndarray:
    """Reflect template points about the face's vertical mid-line (x = 56)."""
    mirrored = np.asarray(points, dtype=np.float64).copy()
    mirrored[:, 0] = 112.0 - mirrored[:, 0]
    return mirrored


@OCCLUDERS.register("mask")
def face_mask(image: Image, landmarks: np.ndarray, rng: np.random.Generator, style: Optional[str] = None,
              scale_range: Sequence[float] = SCALE_RANGE, rotation_deg: float = 6.0, shift: float = 2.0) -> Result:
    """Surgical (pleats + ear loops) or cloth (random colour/texture) mask over nose and mouth."""
    style = _choose(rng, ("surgical", "cloth"), style, "mask")
    top = rng.uniform(58.5, 61.0)
    outline = np.array([[15, top + 13], [26, top + 5], [40, top + 2], [56, top], [72, top + 2], [86, top + 5],
                        [97, top + 13], [99, 87], [94, 102], [82, 113], [68, 120], [56, 122], [44, 120], [30, 113],
                        [18, 102], [13, 87]], dtype=np.float64)
    if style == "surgical":
        colour = pick_colour(rng, MASK_COLOURS, 12)
        parts = [Part(outline, colour, "noise")]
        pleats = [np.array([[17, y + 3], [40, y], [72, y], [95, y + 3]]) for y in (top + 17, top + 29, top + 41)]
        parts.append(Part(pleats, _darker(colour, 0.8), thickness=1.2, closed=False))
        loop = np.array([[15, top + 13], [6, top + 10], [2, 82], [6, 96], [18, 102]])
        parts.append(Part([loop, _mirror(loop)], _darker(colour, 0.9), thickness=1.0, closed=False))
    else:
        colour = pick_colour(rng, None)
        texture = TEXTURE_STYLES[int(rng.integers(1, len(TEXTURE_STYLES)))]
        parts = [Part(outline, colour, texture)]
        seam = np.array([[56, top], [56, 122]])
        parts.append(Part(seam, _darker(colour, 0.75), thickness=1.0, closed=False))
    matrix = placement_matrix(landmarks, rng, (56.0, 84.0), scale_range, rotation_deg, shift)
    return render_parts(image, parts, matrix, rng)


def _lens_outline(centre: Sequence[float], shape: str, half_size: Tuple[float, float]) -> np.ndarray:
    if shape == "round":
        return ellipse_points(centre, half_size, count=36)
    if shape == "rect":
        return rounded_rect_points(centre, half_size, radius=min(half_size) * 0.45)
    # aviator: a rounded top and a deeper, wider-bottomed lower half
    top = ellipse_points(centre, (half_size[0], half_size[1] * 0.8), start_deg=180, end_deg=360, count=18)
    bottom = ellipse_points((centre[0], centre[1]), (half_size[0], half_size[1] * 1.2), start_deg=0,
                            end_deg=180, count=18)
    return np.concatenate([bottom, top], axis=0)


def _glasses_parts(rng: np.random.Generator, lens_colour: Optional[np.ndarray], shape: str,
                   half_size: Tuple[float, float]) -> List[Part]:
    """Lenses (filled when ``lens_colour`` is given), rims, bridge and temples for both eyes."""
    frame_colour = pick_colour(rng, FRAME_COLOURS, 12)
    thickness = rng.uniform(1.5, 2.5)
    lens_style = "gradient" if rng.random() < 0.6 else "solid"
    parts: List[Part] = []
    centres = [(LEFT_EYE[0], LEFT_EYE[1] + 1.0), (RIGHT_EYE[0], RIGHT_EYE[1] + 1.0)]
    outlines = [_lens_outline(centre, shape, half_size) for centre in centres]
    if lens_colour is not None:
        highlight = jitter_colour(rng, np.clip(np.asarray(lens_colour) + 70, 0, 255), 10)
        parts.append(Part(outlines, lens_colour, lens_style, highlight))
    parts.append(Part(outlines, frame_colour, thickness=thickness))
    left_inner = centres[0][0] + half_size[0]
    right_inner = centres[1][0] - half_size[0]
    bridge_y = centres[0][1] - half_size[1] * 0.35
    bridge = np.array([[left_inner - 1, bridge_y], [56.0, bridge_y - 2.5], [right_inner + 1, bridge_y]])
    outer_x = centres[0][0] - half_size[0]
    temple = np.array([[outer_x + 1, bridge_y], [outer_x - 8, bridge_y - 1.5], [max(outer_x - 18, 0.0),
                                                                                   bridge_y - 1.0]])
    parts.append(Part([bridge, temple, _mirror(temple)], frame_colour, thickness=thickness, closed=False))
    return parts


@OCCLUDERS.register("eyeglasses")
def eyeglasses(image: Image, landmarks: np.ndarray, rng: np.random.Generator, style: Optional[str] = None,
               scale_range: Sequence[float] = SCALE_RANGE, rotation_deg: float = 5.0, shift: float = 1.5) -> Result:
    """Clear glasses: only the frame (rims, bridge, temples) is drawn and marked occluded; the eyes stay visible."""
    shape = _choose(rng, ("round", "rect", "aviator"), style, "eyeglasses")
    half_size = (rng.uniform(12.5, 15.0), rng.uniform(9.5, 11.5))
    parts = _glasses_parts(rng, None, shape, half_size)
    matrix = placement_matrix(landmarks, rng, (56.0, 52.0), scale_range, rotation_deg, shift)
    return render_parts(image, parts, matrix, rng)


@OCCLUDERS.register("sunglasses")
def sunglasses(image: Image, landmarks: np.ndarray, rng: np.random.Generator, style: Optional[str] = None,
               scale_range: Sequence[float] = SCALE_RANGE, rotation_deg: float = 5.0, shift: float = 1.5) -> Result:
    """Dark (tinted, gradient or mirrored) lenses over both eyes, with frame, bridge and temples."""
    shape = _choose(rng, ("round", "rect", "aviator"), style, "sunglasses")
    half_size = (rng.uniform(14.0, 16.5), rng.uniform(10.5, 12.5))
    lens_colour = pick_colour(rng, DARK_LENSES, 10)
    parts = _glasses_parts(rng, lens_colour, shape, half_size)
    matrix = placement_matrix(landmarks, rng, (56.0, 52.0), scale_range, rotation_deg, shift)
    return render_parts(image, parts, matrix, rng)


@OCCLUDERS.register("hat")
def hat(image: Image, landmarks: np.ndarray, rng: np.random.Generator, style: Optional[str] = None,
        scale_range: Sequence[float] = SCALE_RANGE, rotation_deg: float = 6.0, shift: float = 2.0) -> Result:
    """Cap (crown + visor), beanie (crown + ribbed band) or brimmed hat over the forehead and the top of the head."""
    style = _choose(rng, ("cap", "beanie", "brim"), style, "hat")
    bottom = rng.uniform(32.0, 39.0)
    colour = pick_colour(rng, None)
    crown = np.array([[-30, bottom + 3], [10, bottom], [56, bottom - 2], [102, bottom], [142, bottom + 3],
                      [142, -60], [-30, -60]], dtype=np.float64)
    parts = [Part(crown, colour, TEXTURE_STYLES[int(rng.integers(len(TEXTURE_STYLES)))])]
    if style == "cap":
        visor = ellipse_points((56.0, bottom - 1.0), (rng.uniform(30, 36), rng.uniform(5, 7)), start_deg=0,
                               end_deg=180, count=24)
        parts.append(Part(visor, _darker(colour, 0.8), "gradient"))
    elif style == "beanie":
        band = np.array([[-30, bottom + 3], [10, bottom], [56, bottom - 2], [102, bottom], [142, bottom + 3],
                         [142, bottom - 9], [102, bottom - 12], [56, bottom - 14], [10, bottom - 12],
                         [-30, bottom - 9]], dtype=np.float64)
        parts.append(Part(band, _darker(colour, 0.85), "stripes"))
    else:
        brim = ellipse_points((56.0, bottom - 2.0), (rng.uniform(62, 75), rng.uniform(5, 7)), count=40)
        parts.append(Part(brim, _darker(colour, 0.8), "solid"))
    matrix = placement_matrix(landmarks, rng, (56.0, 30.0), scale_range, rotation_deg, shift)
    return render_parts(image, parts, matrix, rng)


@OCCLUDERS.register("scarf")
def scarf(image: Image, landmarks: np.ndarray, rng: np.random.Generator, style: Optional[str] = None,
          scale_range: Sequence[float] = SCALE_RANGE, rotation_deg: float = 5.0, shift: float = 2.0) -> Result:
    """A scarf/neck gaiter from between nose and mouth down past the chin, with a wavy top edge and folds."""
    texture = _choose(rng, TEXTURE_STYLES, style, "scarf")
    top = rng.uniform(77.0, 82.0)
    xs = np.linspace(-30.0, 142.0, 18)
    phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2.0)
    edge = np.stack([xs, top + amplitude * np.sin(xs / 14.0 + phase)], axis=1)
    outline = np.concatenate([edge, [[142.0, 170.0], [-30.0, 170.0]]], axis=0)
    colour = pick_colour(rng, None)
    parts = [Part(outline, colour, texture)]
    folds = [np.stack([xs, top + offset + amplitude * np.sin(xs / 11.0 + phase + offset)], axis=1)
             for offset in (12.0, 24.0)]
    parts.append(Part(folds, _darker(colour, 0.7), thickness=1.3, closed=False))
    matrix = placement_matrix(landmarks, rng, (56.0, 95.0), scale_range, rotation_deg, shift)
    return render_parts(image, parts, matrix, rng)


def _capsule(start: Sequence[float], end: Sequence[float], radius: float) -> np.ndarray:
    """Outline of a stadium (finger) between two points."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    angle = np.degrees(np.arctan2(end[1] - start[1], end[0] - start[0]))
    cap_end = ellipse_points(end, (radius, radius), 0.0, angle - 90, angle + 90, 9)
    cap_start = ellipse_points(start, (radius, radius), 0.0, angle + 90, angle + 270, 9)
    return np.concatenate([cap_end, cap_start], axis=0)


HAND_ANCHORS = ("mouth", "nose", "left_eye", "right_eye", "left_cheek", "right_cheek")


def _hand_anchor(name: str) -> np.ndarray:
    mouth = TEMPLATE[3:5].mean(axis=0)
    return {"mouth": mouth, "nose": TEMPLATE[2], "left_eye": TEMPLATE[0], "right_eye": TEMPLATE[1],
            "left_cheek": (TEMPLATE[0] + TEMPLATE[3]) / 2 - [4.0, 0.0],
            "right_cheek": (TEMPLATE[1] + TEMPLATE[4]) / 2 + [4.0, 0.0]}[name]


@OCCLUDERS.register("hand")
def hand(image: Image, landmarks: np.ndarray, rng: np.random.Generator, anchor: Optional[str] = None,
         scale_range: Sequence[float] = (0.9, 1.3), rotation_deg: float = 120.0, shift: float = 3.0) -> Result:
    """A skin-toned hand-like blob (palm, four fingers, thumb) over an anchor — an eye, the nose, the mouth centre
    or a cheek (random when None); the palm covers the anchor."""
    anchor = _choose(rng, HAND_ANCHORS, anchor, "hand anchor")
    colour = pick_colour(rng, SKIN_TONES, 12)
    palm_size = (rng.uniform(12.0, 14.5), rng.uniform(14.0, 16.5))
    shapes = [ellipse_points((0.0, 0.0), palm_size, count=32)]
    lengths = rng.uniform(15.0, 22.0, size=4) * np.array([0.85, 1.0, 0.95, 0.75])
    for x, length in zip((-8.5, -3.0, 2.5, 8.0), lengths):
        shapes.append(_capsule((x, -palm_size[1] + 4), (x * 1.1, -palm_size[1] + 4 - length), 3.0))
    thumb_angle = np.deg2rad(rng.uniform(-60.0, -20.0))
    thumb_base = np.array([palm_size[0] - 3.0, 2.0])
    thumb_tip = thumb_base + 14.0 * np.array([np.cos(thumb_angle), np.sin(thumb_angle)])
    shapes.append(_capsule(thumb_base, thumb_tip, 3.4))
    creases = [np.array([[x, -palm_size[1] + 2.0], [x * 1.05, -palm_size[1] - 6.0]]) for x in (-5.75, -0.25, 5.25)]
    # Hand frame → template: the palm centre moves onto the anchor (the jitter then rotates/scales about it).
    anchor_point = _hand_anchor(anchor)
    parts = [Part([points + anchor_point for points in shapes], colour, "noise"),
             Part([points + anchor_point for points in creases], _darker(colour, 0.75), thickness=0.8, closed=False)]
    matrix = placement_matrix(landmarks, rng, anchor_point, scale_range, rotation_deg, shift)
    return render_parts(image, parts, matrix, rng)
