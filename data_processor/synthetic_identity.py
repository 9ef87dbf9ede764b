"""Parameters of the embedded synthetic faces: who a person is (:class:`Identity`), what changes between two photos
(:class:`Nuisance`), and the knobs that set how hard the set is (:class:`Difficulty`).

Every value is drawn from a numpy ``Generator`` seeded by (seed, split, identity[, image]), so a data set is a pure
function of its seed. Canonical coordinates are those of a frontal 112×112 face aligned to the ArcFace template.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

SPLIT_CODES = {"train": 0, "test": 1}

# Neutral landmark geometry (the ArcFace 112×112 template, symmetrised).
EYE_HALF_SPACING = 17.62
EYE_Y = 51.6
NOSE_Y = 71.74
MOUTH_Y = 92.28
MOUTH_HALF_WIDTH = 14.59

Colour = Tuple[float, float, float]
SKIN_PALETTE = np.array([(247, 222, 205), (236, 196, 168), (218, 172, 134), (193, 143, 104), (160, 112, 78),
                         (122, 82, 57), (88, 58, 42)], dtype=np.float64)
HAIR_PALETTE = {  # name: (RGB, sampling weight)
    "black": ((22, 18, 17), 3.0), "dark_brown": ((52, 36, 26), 3.0), "brown": ((92, 62, 40), 2.5),
    "light_brown": ((145, 105, 68), 1.5), "auburn": ((118, 50, 30), 1.0), "red": ((172, 78, 36), 0.8),
    "blond": ((205, 172, 112), 1.3), "platinum": ((228, 214, 176), 0.5), "grey": ((142, 140, 137), 0.8),
    "white": ((218, 215, 208), 0.4),
}
IRIS_PALETTE = [(58, 34, 20), (98, 60, 30), (128, 100, 48), (86, 118, 68), (76, 118, 170), (118, 138, 152),
                (160, 110, 40)]
HAIR_STYLES = ("crop", "side_part", "bangs", "long", "curly", "receding", "buzz", "bald")
HAIR_STYLE_WEIGHTS = (2.0, 2.0, 1.5, 2.0, 1.2, 1.0, 1.0, 0.6)
BEARD_STYLES = ("none", "stubble", "moustache", "goatee", "full")
BEARD_STYLE_WEIGHTS = (5.0, 1.2, 0.8, 0.8, 1.2)
BACKGROUND_KINDS = ("flat", "gradient", "blotches", "shapes", "grain")


@dataclass(frozen=True)
class Difficulty:
    """Amplitudes of the per-image nuisance factors and the spread of identities (1.0 = default spread).

    Larger nuisance or smaller ``identity_spread`` makes verification harder. All values are plain floats so a
    config or the manifest can carry them.
    """

    rotation_deg: float = 8.0        # in-plane rotation, uniform ±
    scale_jitter: float = 0.06       # relative scale, uniform ±
    shift_px: float = 2.0            # translation, uniform ± (pixels)
    yaw_deg: float = 15.0            # head yaw (features slide over the head), uniform ±
    squeeze: float = 0.06            # extra horizontal squeeze, uniform [0, squeeze]
    expression: float = 1.0         # scales smile / mouth opening / brow raise / squint
    light_gradient: float = 0.5      # directional light: brightness ramp across the image, uniform [0, x]
    gain_min: float = 0.7            # global exposure gain range
    gain_max: float = 1.25
    tint: float = 0.08               # per-channel white-balance error, uniform ±
    noise_min: float = 1.0           # Gaussian sensor noise sigma range (grey levels)
    noise_max: float = 6.0
    blur_max: float = 0.9            # Gaussian blur sigma, uniform [0, x] (pixels)
    clutter: float = 0.8             # probability of a textured (not flat / gradient) background
    hair_jitter: float = 0.1         # per-image change of hair volume and hairline (fraction)
    identity_spread: float = 1.0     # scales how far identities' continuous parameters stray from the mean face


@dataclass(frozen=True)
class Identity:
    """The persistent look of one synthetic person (canonical coordinates of a 112×112 frontal face)."""

    skin: Colour
    face_half_width: float
    face_half_height: float
    face_centre_y: float
    jaw_exponent: float
    jaw_taper: float
    ear_size: float
    neck_width: float
    eye_half_spacing: float
    eye_y: float
    eye_half_width: float
    eye_half_height: float
    eye_roundness: float
    eye_tilt_deg: float
    iris_radius: float
    iris_colour: Colour
    lash_colour: Colour
    brow_gap: float
    brow_thickness: float
    brow_length: float
    brow_arch: float
    brow_tilt_deg: float
    brow_colour: Colour
    nose_y: float
    nose_width: float
    nose_tip_size: float
    nose_protrusion: float
    nose_bridge: float
    mouth_y: float
    mouth_half_width: float
    upper_lip: float
    lower_lip: float
    mouth_curve: float
    lip_colour: Colour
    hair_style: str
    hair_colour: Colour
    hairline_y: float
    hair_volume: float
    hair_part: float
    fringe_y: float
    age: float
    blush: float
    moles: Tuple[Tuple[float, float, float], ...]
    freckles: Tuple[Tuple[float, float], ...]
    beard_style: str
    beard_colour: Colour
    moustache_thickness: float


@dataclass(frozen=True)
class Nuisance:
    """What changes between two photos of the same identity."""

    rotation_deg: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    yaw_deg: float = 0.0
    squeeze: float = 1.0
    smile: float = 0.0
    mouth_open: float = 0.0
    brow_raise: float = 0.0
    eye_open: float = 1.0
    hair_scale: float = 1.0
    light_angle: float = 0.0
    light_strength: float = 0.0
    gain: float = 1.0
    tint: Colour = (1.0, 1.0, 1.0)
    background: str = "flat"
    background_colours: Tuple[Colour, Colour] = ((128.0, 128.0, 128.0), (128.0, 128.0, 128.0))
    clothes_colour: Colour = (60.0, 60.0, 90.0)
    noise_sigma: float = 0.0
    blur_sigma: float = 0.0
    texture_seed: int = 0


def identity_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Random generator of identity ``index`` of ``split`` (train and test identities never share a stream)."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), 0])


def image_rng(seed: int, split: str, index: int, image: int) -> np.random.Generator:
    """Random generator of photo ``image`` of identity ``index`` of ``split``."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), 1, int(image)])


def clip_colour(values: np.ndarray) -> Colour:
    """An RGB triple of floats clipped to [0, 255]."""
    clipped = np.clip(values, 0, 255)
    return (float(clipped[0]), float(clipped[1]), float(clipped[2]))


def sample_identity(rng: np.random.Generator, spread: float = 1.0) -> Identity:
    """Draw one identity. Continuous parameters are ``mean + spread * U(-1, 1) * half_range``."""

    def centred(mean: float, half_range: float) -> float:
        return float(mean + spread * half_range * rng.uniform(-1.0, 1.0))

    def pick(options: Sequence, weights: Sequence[float]) -> int:
        p = np.asarray(weights, dtype=np.float64)
        return int(rng.choice(len(options), p=p / p.sum()))

    skin_t = float(np.clip(0.5 + spread * rng.uniform(-0.5, 0.5), 0.0, 1.0)) * (len(SKIN_PALETTE) - 1)
    low = int(min(math.floor(skin_t), len(SKIN_PALETTE) - 2))
    skin = SKIN_PALETTE[low] * (1 - (skin_t - low)) + SKIN_PALETTE[low + 1] * (skin_t - low)
    skin = skin * np.array([1.0 + 0.04 * rng.uniform(-1, 1), 1.0, 1.0 + 0.05 * rng.uniform(-1, 1)])
    age = float(rng.uniform(0.0, 1.0))
    hair_names = list(HAIR_PALETTE)
    hair_weights = [w * (1.0 + 4.0 * max(0.0, age - 0.6) * (name in ("grey", "white")))
                    for name, (_, w) in HAIR_PALETTE.items()]
    hair_colour = np.array(HAIR_PALETTE[hair_names[pick(hair_names, hair_weights)]][0], dtype=np.float64)
    hair_colour = hair_colour * rng.uniform(0.88, 1.12)
    style = HAIR_STYLES[pick(HAIR_STYLES, HAIR_STYLE_WEIGHTS)]
    brow_colour = np.minimum(hair_colour * rng.uniform(0.55, 0.9), skin * 0.55)
    iris = np.array(IRIS_PALETTE[int(rng.integers(len(IRIS_PALETTE)))], dtype=np.float64) * rng.uniform(0.85, 1.15)
    lip = skin * np.array([0.93, 0.62, 0.62]) + np.array([12.0, 0.0, 4.0]) * rng.uniform(0.0, 1.0)
    n_moles = int(rng.choice(4, p=[0.5, 0.25, 0.15, 0.10]))
    moles = tuple((float(rng.uniform(-0.75, 0.75)), float(rng.uniform(-0.15, 0.75)), float(rng.uniform(0.6, 1.5)))
                  for _ in range(n_moles))
    freckles: Tuple[Tuple[float, float], ...] = ()
    if rng.uniform() < 0.22:
        count = int(rng.integers(15, 45))
        freckles = tuple((float(rng.normal(0, 0.32)), float(rng.normal(0.28, 0.1))) for _ in range(count))
    beard = BEARD_STYLES[pick(BEARD_STYLES, BEARD_STYLE_WEIGHTS)]
    return Identity(
        skin=clip_colour(skin),
        face_half_width=centred(41.5, 4.0),
        face_half_height=centred(53.0, 3.5),
        face_centre_y=centred(57.5, 1.5),
        jaw_exponent=centred(2.25, 0.45),
        jaw_taper=centred(0.14, 0.12),
        ear_size=centred(1.0, 0.2),
        neck_width=centred(0.62, 0.08),
        eye_half_spacing=centred(EYE_HALF_SPACING, 1.6),
        eye_y=centred(EYE_Y, 1.8),
        eye_half_width=centred(6.3, 1.2),
        eye_half_height=centred(2.9, 0.7),
        eye_roundness=centred(0.8, 0.3),
        eye_tilt_deg=centred(2.0, 7.0),
        iris_radius=centred(2.9, 0.45),
        iris_colour=clip_colour(iris),
        lash_colour=clip_colour(np.minimum(hair_colour, 60) * 0.6),
        brow_gap=centred(7.5, 1.8),
        brow_thickness=centred(2.3, 1.0),
        brow_length=centred(2.2, 0.35),
        brow_arch=centred(1.6, 1.4),
        brow_tilt_deg=centred(0.0, 10.0),
        brow_colour=clip_colour(brow_colour),
        nose_y=centred(NOSE_Y, 2.3),
        nose_width=centred(5.8, 1.8),
        nose_tip_size=centred(3.0, 0.8),
        nose_protrusion=centred(9.0, 2.5),
        nose_bridge=centred(0.6, 0.4),
        mouth_y=centred(MOUTH_Y, 1.8),
        mouth_half_width=centred(MOUTH_HALF_WIDTH, 2.0),
        upper_lip=centred(2.2, 0.9),
        lower_lip=centred(3.0, 1.1),
        mouth_curve=centred(0.0, 1.0),
        lip_colour=clip_colour(lip),
        hair_style=style,
        hair_colour=clip_colour(hair_colour),
        hairline_y=centred(20.0, 5.0),
        hair_volume=centred(1.12, 0.08),
        hair_part=float(rng.choice([-1.0, 1.0])),
        fringe_y=centred(33.0, 3.0),
        age=age,
        blush=float(rng.uniform(0.0, 0.35)),
        moles=moles,
        freckles=freckles,
        beard_style=beard,
        beard_colour=clip_colour(hair_colour * rng.uniform(0.75, 1.0)),
        moustache_thickness=centred(4.0, 1.5),
    )


def sample_nuisance(rng: np.random.Generator, difficulty: Difficulty = Difficulty()) -> Nuisance:
    """Draw the per-photo nuisance factors."""
    d = difficulty
    smile = float(rng.uniform(0, 1) * d.expression) if rng.uniform() < 0.6 else 0.0
    mouth_open = float(rng.uniform(0, 1) * d.expression) if rng.uniform() < 0.3 else 0.0
    clutter = rng.uniform() < d.clutter
    background = str(rng.choice(BACKGROUND_KINDS[2:] if clutter else BACKGROUND_KINDS[:2]))
    colours = (clip_colour(rng.uniform(10, 245, 3)), clip_colour(rng.uniform(10, 245, 3)))
    return Nuisance(
        rotation_deg=float(rng.uniform(-1, 1) * d.rotation_deg),
        scale=float(1.0 + rng.uniform(-1, 1) * d.scale_jitter),
        shift_x=float(rng.uniform(-1, 1) * d.shift_px),
        shift_y=float(rng.uniform(-1, 1) * d.shift_px),
        yaw_deg=float(rng.uniform(-1, 1) * d.yaw_deg),
        squeeze=float(1.0 - rng.uniform(0, 1) * d.squeeze),
        smile=smile,
        mouth_open=mouth_open,
        brow_raise=float(rng.uniform(0, 1) * d.expression) if rng.uniform() < 0.4 else 0.0,
        eye_open=float(1.0 - rng.uniform(0, 0.3) * d.expression - 0.2 * smile),
        hair_scale=float(1.0 + rng.uniform(-1, 1) * d.hair_jitter),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light_strength=float(rng.uniform(0, d.light_gradient)),
        gain=float(rng.uniform(d.gain_min, d.gain_max)),
        tint=clip_colour(1.0 + rng.uniform(-d.tint, d.tint, 3)),
        background=background,
        background_colours=colours,
        clothes_colour=clip_colour(rng.uniform(15, 235, 3)),
        noise_sigma=float(rng.uniform(d.noise_min, d.noise_max)),
        blur_sigma=float(rng.uniform(0, d.blur_max)),
        texture_seed=int(rng.integers(0, 2 ** 31 - 1)),
    )
