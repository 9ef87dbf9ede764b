"""README figures: every occlusion type (rows) on real aligned faces from ../shared (when present) and on the embedded
synthetic faces (columns), plus the visibility masks of a few of them; and the held-out family ``object``.

    python -m tools.occlusion_examples [--out docs/figures/occlusion_examples.png] [--shared ../shared]
    python -m tools.occlusion_examples --heldout [--heldout-out docs/figures/occlusion_heldout_examples.png]

Writes ``<out>`` (the grid of the training renderer's types) and ``<out stem>_visibility.png`` (image | visibility
overlay, magenta = occluded); with ``--heldout`` only ``<heldout-out>``: every photographed object and the three
crowd placements (donor faces: other CelebA identities for the real faces, other synthetic identities for the
synthetic ones), with a visibility row. Real faces: CelebA aligned to the ArcFace template (so the template is their
landmarks); skipped with a message when ../shared is absent. Synthetic faces use the generator's own landmarks.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_processor.image_io import read_image, write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112
from data_processor.occlusion import OBJECT_OCCLUDERS, OCCLUDERS, PHOTO_OBJECTS, DonorPool, RGBAOccluder, occlude
from data_processor.occlusion.grid import image_grid, stack_rows, visibility_overlay
from data_processor.occlusion.objects import CROWD_SIDES
from utils.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
Face = Tuple[np.ndarray, np.ndarray]


def _celeba_files(shared: Path) -> List[Path]:
    root = shared / "data" / "celeba_subset_112" / "images"
    if not root.is_dir():
        print(f"no real faces: {root} not found (figure uses synthetic faces only)")
        return []
    return sorted(root.glob("*/*.jpg"))


def real_faces(shared: Path, count: int) -> List[Face]:
    files = _celeba_files(shared)[::797][:count]
    return [(read_image(path), ARCFACE_TEMPLATE_112.copy()) for path in files]


def synthetic_faces(count: int) -> List[Face]:
    from data_processor.synthetic_render import render_identity_image

    return [render_identity_image(0, "test", identity, 1) for identity in range(count)]


FaceGroup = Tuple[List[Face], List[str], DonorPool]  # faces, their identities, the pool their crowd donors come from


def real_face_group(shared: Path, count: int, donors: int = 16) -> Optional[FaceGroup]:
    """CelebA faces (identity = folder) and a donor pool of other CelebA images, or None without ../shared."""
    files = _celeba_files(shared)
    if not files:
        return None
    chosen, pool = files[::797][:count], files[397::379][:donors]
    faces = [(read_image(path), ARCFACE_TEMPLATE_112.copy()) for path in chosen]
    donor_pool = DonorPool([ARCFACE_TEMPLATE_112] * len(pool), [path.parent.name for path in pool],
                           images=[read_image(path) for path in pool])
    return faces, [path.parent.name for path in chosen], donor_pool


def synthetic_face_group(count: int, donors: int = 8) -> FaceGroup:
    """Embedded synthetic test faces and a donor pool of other synthetic identities."""
    from data_processor.synthetic_render import render_identity_image

    pool = [render_identity_image(0, "test", identity, 2) for identity in range(count, count + donors)]
    donor_pool = DonorPool([points for _, points in pool], [f"s{i}" for i in range(count, count + donors)],
                           images=[image for image, _ in pool])
    return synthetic_faces(count), [f"s{i}" for i in range(count)], donor_pool


def demo_rgba_occluder() -> RGBAOccluder:
    """A user-style RGBA occluder drawn here (a patterned cloth mask at 2× template scale, anchors = template)."""
    scale = 2.0
    art = np.zeros((224, 224, 4), dtype=np.uint8)
    outline = np.array([[30, 128], [112, 116], [194, 128], [196, 180], [160, 228], [112, 240], [64, 228],
                        [28, 180]], dtype=np.int32)
    cv2.fillPoly(art, [outline], (230, 140, 40, 255))
    for y in range(120, 240, 12):
        cv2.line(art, (0, y), (223, y), (250, 220, 120, 255), 3)
    art[..., 3] = np.where(cv2.fillPoly(np.zeros((224, 224), np.uint8), [outline], 255) > 0, 235, 0)
    return RGBAOccluder(art, ARCFACE_TEMPLATE_112 * scale, name="demo_cloth_mask")


def build_figure(faces: Sequence[Face], kinds: Sequence[str], seed: int = 0) -> np.ndarray:
    occluder = demo_rgba_occluder()
    rows = []
    for kind in kinds:
        params = {"occluder": occluder} if kind == "rgba" else {}
        rows.append([occlude(image, points, kind, (seed, index), **params)[0]
                     for index, (image, points) in enumerate(faces)])
    return image_grid(rows, list(kinds), cell=80)


def build_visibility_figure(faces: Sequence[Face], kinds: Sequence[str], seed: int = 0) -> np.ndarray:
    rows = []
    for kind in kinds:
        row = []
        for index, (image, points) in enumerate(faces):
            noisy, visibility = occlude(image, points, kind, (seed, index))
            row += [noisy, visibility_overlay(image, visibility)]
        rows.append(row)
    labels = [label for _ in faces for label in ("occluded", "visibility")]
    return image_grid(rows, list(kinds), labels, cell=80)


HELDOUT_ROWS = ([(f"object: {name}", "object_photo", {"objects": [name]}) for name in PHOTO_OBJECTS]
                + [(f"crowd: {side}", "crowd", {"side": side}) for side in CROWD_SIDES])


def build_heldout_figure(groups: Sequence[FaceGroup], seed: int = 0) -> np.ndarray:
    """Rows: every photographed object, every crowd side, then the visibility of a random object / crowd occluder;
    columns: the faces of ``groups``."""
    columns = [(image, points, identity, donors) for faces, identities, donors in groups
               for (image, points), identity in zip(faces, identities)]

    def apply(kind: str, params: dict, column: int) -> Tuple[np.ndarray, np.ndarray]:
        image, points, identity, donors = columns[column]
        extra = {"donors": donors, "identity": identity} if kind == "crowd" else {}
        return occlude(image, points, kind, (seed, column), **params, **extra)

    rows = [[apply(kind, params, c)[0] for c in range(len(columns))] for _, kind, params in HELDOUT_ROWS]
    labels = [label for label, _, _ in HELDOUT_ROWS]
    for kind in OBJECT_OCCLUDERS:
        row = []
        for c in range(len(columns)):
            _, visibility = apply(kind, {}, c)
            row.append(visibility_overlay(columns[c][0], visibility))
        rows.append(row)
        labels.append(f"{kind} visibility")
    names = [("CelebA" if len(groups) > 1 and c < len(groups[0][0]) else "synthetic") for c in range(len(columns))]
    return image_grid(rows, labels, names, cell=96, label_width=150)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "figures" / "occlusion_examples.png"))
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared"))
    parser.add_argument("--real", type=int, default=2, help="real faces (columns) when ../shared is present")
    parser.add_argument("--synthetic", type=int, default=3, help="synthetic faces (columns)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", action="store_true",
                        help="write only the figure of family 'object' (photographed objects, crowd faces)")
    parser.add_argument("--heldout-out", default=str(REPO_ROOT / "docs" / "figures" / "occlusion_heldout_examples.png"))
    args = parser.parse_args(argv)
    if args.heldout:
        real = real_face_group(Path(args.shared), args.real + 1)
        groups = ([real] if real else []) + [synthetic_face_group(args.synthetic)]
        out = Path(args.heldout_out)
        write_image(out, build_heldout_figure(groups, args.seed))
        print(f"wrote {out} ({len(HELDOUT_ROWS)} rows x {sum(len(g[0]) for g in groups)} faces)")
        return out
    faces = real_faces(Path(args.shared), args.real) + synthetic_faces(args.synthetic)
    kinds = [name for name in OCCLUDERS.names() if name not in ("clean",) + OBJECT_OCCLUDERS]  # --heldout draws these
    kinds = ["clean"] + sorted(kinds, key=lambda name: (name.startswith("partial_"), name))
    out = Path(args.out)
    write_image(out, build_figure(faces, kinds, args.seed))
    shown = faces[:1] + faces[-1:]
    visibility_kinds = ["mask", "sunglasses", "eyeglasses", "hand", "partial_upper", "partial_random", "polygon"]
    visibility_out = out.with_name(f"{out.stem}_visibility{out.suffix}")
    write_image(visibility_out, stack_rows([build_visibility_figure(shown, visibility_kinds, args.seed)]))
    print(f"wrote {out} ({len(kinds)} types x {len(faces)} faces) and {visibility_out}")
    return out


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
