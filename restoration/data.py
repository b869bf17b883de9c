"""Real grayscale photographs that ship inside installable packages, with a fixed split.

Most images come from ``skimage.data``; every one loads without a network (each was
checked with the network blocked; ``brain``, ``cells3d``, ``eagle``, ``kidney``,
``lily``, ... need a pooch download and are not used; ``cat`` is the same picture as
``chelsea``). Images are converted to grayscale (ITU-R 601 luma via
``skimage.color.rgb2gray``) and mapped from [0, 1] to [-1, 1].

The split is fixed and by whole image, so no test pixel is ever seen in training:

- ``HELDOUT``: camera (a portrait outdoors: edges, grass texture, flat sky), astronaut
  (a face, a flag, a space suit: smooth shading and sharp detail) and coffee (a cup on
  a wooden table: curved edges and wood grain). Used only by :func:`heldout_images`.
- ``VALIDATION``: motorcycle (the left view of skimage's ``stereo_motorcycle``: a
  motorbike in a workshop, metal, cables and tools), cut like the test images by
  :func:`validation_images`: the crops on which sampler settings are chosen, so that
  the test crops are used only for the final numbers. It is not a training image of
  the committed prior either.
- ``TRAINING``: the other 14 photographs and micrographs, from smooth to textured and
  from natural to man-made: brick, cell, chelsea, clock, coins, grass, gravel,
  hubble_deep_field, immunohistochemistry, moon, page, retina, rocket, text.
  (The synthetic images - binary_blobs, checkerboard, colorwheel, horse, logo,
  shepp_logan_phantom - and the 102-pixel microaneurysms are left out.)
- ``PHOTOS``: five more natural photographs from three other packages, added to the
  training set ``"photos"`` (``TRAINING_SETS``): grace_hopper (a portrait, matplotlib's
  sample data), ascent (people on a staircase) and aero (an aerial view of a town), both
  from PyWavelets' ``pywt.data``, and china (a temple) and flower (a flower head, CC-BY),
  scikit-learn's ``load_sample_image``. ``"skimage"`` is ``TRAINING`` alone.
  PyWavelets' ``camera`` is skimage's held-out camera and is never loaded; the right
  view of ``stereo_motorcycle`` shows the validation scene and is never loaded either.
  Cut like the test images by :func:`photo_test_images`, they are also a second test
  set (20 crops) for any prior that did not train on them, such as the committed one
  (trained on ``"debian_jigzo"``).
- ``DEBIAN_PHOTOS``: 68 natural photographs from seven Debian packages. 43 come from four
  (``apt-get install mate-backgrounds palapeli-data opencv-doc
  plasma-workspace-wallpapers``): wallpapers of flowers, dunes, forests and lakes,
  jigsaw pictures of a castle, a bridge and animals, and OpenCV's sample photographs (a
  baboon, fruit, a street, a footballer, office clutter). The training set ``"debian"``
  is ``TRAINING`` plus these, and leaves out ``PHOTOS``, so that the photos split stays
  unseen by a prior trained on it. Fourteen more come from Lomiri's wallpapers
  (``apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04``: mountains, a
  creek, a bird on a tree, dandelions, dogs, a fig, paint brushes); ``"debian_lomiri"``
  is ``"debian"`` plus these. Eleven more are the
  pictures of a children's jigsaw game (``apt-get install jigzo-data``: a bicycle, a
  kookaburra, blackberries, a castle, clouds through branches, a gorilla, a helicopter,
  a horse, a slide, a steam train, a windmill; read from its ``.pzl`` puzzle files);
  ``"debian_jigzo"`` is ``"debian_lomiri"`` plus these; the committed prior trained on
  it. ``DIFFSCI_DEBIAN_ROOT`` (:func:`debian_root`) reads the files from under another
  folder than ``/``.

Scale: the test images are the held-out photographs resized (with anti-aliasing) so
that their short side is ``TEST_SHORT_SIDE = 128`` pixels; the central 128x128 square
is cut into four 64x64 quadrants, so each test image shows a quarter of a scene, as a
64x64 crop of a 128-pixel thumbnail. The prior is trained on 32x32 patches of the
training images resized to short sides ``TRAIN_SHORT_SIDES = (128, 192)``: the test
scale itself, plus one coarser-than-test scale (1.5x more pixels per object) that
doubles the number of distinct patches while keeping the edge and texture statistics
close to those of the test crops (natural images are nearly scale invariant). Random
horizontal and vertical flips augment the patches.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

__all__ = [
    "HELDOUT",
    "TRAINING",
    "PHOTOS",
    "DEBIAN_PHOTOS",
    "DEBIAN_PACKAGES",
    "TRAINING_SETS",
    "debian_root",
    "TEST_SHORT_SIDE",
    "TRAIN_SHORT_SIDES",
    "load_image",
    "training_images",
    "training_patches",
    "heldout_images",
    "validation_images",
    "photo_test_images",
]

HELDOUT = ("camera", "astronaut", "coffee")
VALIDATION = ("motorcycle",)
TRAINING = (
    "brick",
    "cell",
    "chelsea",
    "clock",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
PHOTOS = ("grace_hopper", "ascent", "aero", "china", "flower")

#: Natural photographs shipped by Debian packages, name -> (package, file). Chosen by eye
#: from everything the packages hold: the desktop wallpapers that are photographs, the
#: jigsaw pictures, and the photographs among OpenCV's sample images (left out:
#: chessboards, text, logos, synthetic scenes, paintings, the second view of each stereo
#: or near-duplicate pair, and OpenCV's aero1 / aero3, which may show PHOTOS' aero).
#: The first four packages make the "debian" training set; Lomiri's two wallpaper
#: packages (its abstract pattern, gradients and space composite left out) are added
#: for "debian_lomiri".
_DEBIAN_SOURCES = (  # (package, path pattern, prefix of our names, file stems)
    (
        "mate-backgrounds",
        "/usr/share/backgrounds/mate/nature/{}.jpg",
        "mate",
        "Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird RainDrops Storm TwoWings "
        "Wood YellowFlower",
    ),
    (
        "palapeli-data",
        "/usr/share/palapeli/collection/{}.jpg",
        "palapeli",
        "castle-maintenon cincinnati-bridge citrus-fruits european-honey-bee "
        "panther-chameleon-female",
    ),
    (
        "opencv-doc",
        "/usr/share/doc/opencv-doc/examples/data/{}",
        "opencv",
        "aloeL.jpg apple.jpg baboon.jpg board.jpg box_in_scene.png building.jpg butterfly.jpg "
        "chicky_512.png fruits.jpg graf1.png home.jpg leuvenA.jpg messi5.jpg orange.jpg "
        "rubberwhale1.png smarties.png squirrel_cls.jpg stuff.jpg",
    ),
    (
        "plasma-workspace-wallpapers",
        "/usr/share/wallpapers/{}/contents/images/1280x1024.jpg",
        "plasma",
        "Autumn BytheWater ColdRipple EveningGlow FallenLeaf OneStandsOut Path summer_1am",
    ),
)
_LOMIRI_SOURCES = (
    (
        "lomiri-wallpapers-16.04",
        "/usr/share/backgrounds/{}.jpg",
        "lomiri",
        "Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly Picture_0B_by_freespace "
        "Picture_1A_by_freespace Wine_by_Jakkub_Mede aitzgorri_by_Aitzol_Berasategi "
        "free_by_Peter_Nerlich friends_by_Aitzol_Berasategi greentock_by_Peter_Nerlich "
        "life_by_Aitzol_Berasategi picosdeeuropa_by_Aitzol_Berasategi "
        "seeding_by_Clements_Engelhardt sunset_by_Aitzol_Berasategi",
    ),
    (
        "lomiri-wallpapers-20.04",
        "/usr/share/backgrounds/{}.jpg",
        "lomiri",
        "Kleiber_by_Lukas_Baubkus",
    ),
)
#: jigzo's puzzles (``.pzl`` files, read by :func:`_pzl_image`); its penguin is left out
#: (CC-BY-NC, the others are GPL-2).
_JIGZO_SOURCES = (
    (
        "jigzo-data",
        "/usr/share/games/jigzo/puzzles/00_default/{}.pzl",
        "jigzo",
        "bike-3x4 bird-2x3 blackberry-3x3 castle-6x3 clouds-4x4 gorilla2-3x3 heli-4x3 "
        "horse-4x3 tobogan-4x3 train-2x2 windmill-4x4",
    ),
)


def _photo_table(sources) -> dict[str, tuple[str, str]]:
    """name -> (package, path); a name is the prefix and the file stem up to its first
    '-' or '_by_' (the author credit), lower case."""
    return {
        f"{prefix}_{stem.split('.')[0].split('-')[0].split('_by_')[0].lower()}": (
            package,
            pattern.format(stem),
        )
        for package, pattern, prefix, stems in sources
        for stem in stems.split()
    }


_DEBIAN_FOUR = _photo_table(_DEBIAN_SOURCES)
_LOMIRI = _photo_table(_LOMIRI_SOURCES)
_JIGZO = _photo_table(_JIGZO_SOURCES)
DEBIAN_PHOTOS: dict[str, tuple[str, str]] = {**_DEBIAN_FOUR, **_LOMIRI, **_JIGZO}
DEBIAN_PACKAGES = tuple(sorted({pkg for pkg, _ in DEBIAN_PHOTOS.values()}))
TRAINING_SETS = {
    "skimage": TRAINING,
    "photos": TRAINING + PHOTOS,
    "debian": TRAINING + tuple(_DEBIAN_FOUR),
    "debian_lomiri": TRAINING + tuple(_DEBIAN_FOUR) + tuple(_LOMIRI),
    "debian_jigzo": TRAINING + tuple(_DEBIAN_FOUR) + tuple(_LOMIRI) + tuple(_JIGZO),
}
TEST_SHORT_SIDE = 128
TRAIN_SHORT_SIDES = (128, 192)
CROPS_PER_IMAGE = 4


def _skimage():
    try:
        import skimage.color
        import skimage.data
        import skimage.io
        import skimage.transform
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "diffsci.restoration.data needs scikit-image: pip install 'scikit-image>=0.21' "
            "(or pip install 'diffsci[restoration]')"
        ) from err
    return skimage


def _require(module: str, pip_name: str, image: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the training image {image!r} ships with {pip_name}: pip install {pip_name} "
            "(or pip install 'diffsci[restoration]')"
        ) from err


def _raw_image(name: str) -> np.ndarray:
    """The image as its package stores it (uint8 or float, gray or RGB)."""
    if name == "motorcycle":
        return np.asarray(_skimage().data.stereo_motorcycle()[0])  # (left, right, disparity)
    if name == "grace_hopper":
        cbook = _require("matplotlib.cbook", "matplotlib", name)
        mpimg = _require("matplotlib.image", "matplotlib", name)
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(mpimg.imread(f, format="jpg"))
    if name in ("ascent", "aero"):
        return np.asarray(getattr(_require("pywt.data", "PyWavelets", name), name)())
    if name in DEBIAN_PHOTOS:
        return _debian_image(name)
    if name in ("china", "flower"):
        datasets = _require("sklearn.datasets", "scikit-learn", name)
        return np.asarray(datasets.load_sample_image(f"{name}.jpg"))
    return np.asarray(getattr(_skimage().data, name)())


def debian_root() -> str:
    """The folder the Debian packages' files are read under: ``$DIFFSCI_DEBIAN_ROOT``,
    default ``/`` (where apt-get installs them). Without root, unpack the packages
    anywhere (``apt-get download PKG && dpkg -x PKG_*.deb DIR``) and set the variable
    to DIR; a machine without the packages can be given a copy of just the files."""
    root = os.environ.get("DIFFSCI_DEBIAN_ROOT", "/")
    if not os.path.isdir(root):  # an empty value would read paths relative to the cwd
        raise FileNotFoundError(f"DIFFSCI_DEBIAN_ROOT={root!r} is not a folder")
    return root


def _debian_path(installed: str) -> str:
    """Where a file that a Debian package installs at ``installed`` is read from."""
    return os.path.join(debian_root(), installed.lstrip("/"))


def _debian_image(name: str) -> np.ndarray:
    package, installed = DEBIAN_PHOTOS[name]
    path = _debian_path(installed)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the training image {name!r} ({path}) ships with the Debian package "
            f"{package}: apt-get install {package}, or unpack it under "
            f"$DIFFSCI_DEBIAN_ROOT (the Debian training sets need "
            f"{' '.join(DEBIAN_PACKAGES)})"
        )
    if path.endswith(".pzl"):
        return _pzl_image(path)
    return np.asarray(_skimage().io.imread(path))


def _pzl_image(path: str) -> np.ndarray:
    """The picture of a jigzo puzzle file.

    A ``.pzl`` file is a text header (``PzlF``, version, name, URL, map name, the map's
    byte count), the map (whose line ``image X Y W H ...`` places the whole picture in
    the texture atlas), then entries of a file name line, a byte count line and that
    many bytes: a thumbnail JPEG, a PNG of piece masks and the atlas JPEG. The picture
    is the atlas's (X, Y, W, H) box less its one-pixel dark frame.
    """
    import io

    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n", 6)
    if lines[0] != b"PzlF" or len(lines) < 7:
        raise ValueError(f"{path} is not a jigzo puzzle file (no PzlF header)")
    tmap, rest = lines[6][: int(lines[5])], lines[6][int(lines[5]) :]
    boxes = [line.split()[1:5] for line in tmap.split(b"\n") if line.startswith(b"image ")]
    box = tuple(int(v) for v in boxes[0]) if boxes else None
    atlas = None
    while rest.strip():  # entries: name line, byte count line, bytes
        name, _, rest = rest.lstrip(b"\n").partition(b"\n")
        count, _, rest = rest.partition(b"\n")
        blob, rest = rest[: int(count)], rest[int(count) :]
        if name.endswith(b".jpg") and not name.endswith(b"-t.jpg"):
            atlas = blob
    if box is None or atlas is None:
        raise ValueError(f"{path}: no 'image' box or no atlas JPEG in the puzzle file")
    x, y, w, h = box
    img = np.asarray(Image.open(io.BytesIO(atlas)).convert("RGB"))
    return img[y + 1 : y + h - 1, x + 1 : x + w - 1]


@functools.cache
def load_image(name: str, short_side: int | None = None) -> np.ndarray:
    """``skimage.data.<name>()`` as a float32 grayscale array in [-1, 1], resized with
    anti-aliasing so that its short side is ``short_side`` pixels (None, or an image
    already smaller: full size, never upscaled).

    The returned array is cached: treat it as read-only.
    """
    known = HELDOUT + VALIDATION + TRAINING + PHOTOS + tuple(DEBIAN_PHOTOS)
    if name not in known:
        raise ValueError(f"unknown image {name!r}; use one of {known}")
    sk = _skimage()
    img = _raw_image(name)
    if img.ndim == 3:
        img = sk.color.rgb2gray(img[..., :3])  # float in [0, 1]
    elif img.dtype == np.uint8:
        img = img.astype(np.float64) / 255.0
    img = np.asarray(img, dtype=np.float64)
    if short_side is not None and short_side < min(img.shape):
        h, w = img.shape
        scale = short_side / min(h, w)
        shape = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
        img = sk.transform.resize(img, shape, order=1, anti_aliasing=True, mode="reflect")
    out = (2.0 * np.clip(img, 0.0, 1.0) - 1.0).astype(np.float32)
    out.setflags(write=False)
    return out


def _training_names(training_set: str) -> tuple[str, ...]:
    if training_set not in TRAINING_SETS:
        raise ValueError(
            f"unknown training set {training_set!r}; available: {tuple(TRAINING_SETS)}"
        )
    return TRAINING_SETS[training_set]


def training_images(training_set: str = "skimage") -> list[torch.Tensor]:
    """The images of ``TRAINING_SETS[training_set]`` at every scale of
    ``TRAIN_SHORT_SIDES``, each (H, W) in [-1, 1]."""
    names = _training_names(training_set)
    return [
        torch.from_numpy(load_image(name, s).copy()) for s in TRAIN_SHORT_SIDES for name in names
    ]


@functools.lru_cache(maxsize=2)
def _training_images(training_set: str) -> tuple[torch.Tensor, ...]:
    return tuple(training_images(training_set))


def training_patches(
    n: int,
    size: int = 32,
    generator: torch.Generator | None = None,
    training_set: str = "skimage",
    transpose: bool = False,
) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` patches (n, 1, size, size) of the training images
    of ``training_set``.

    Each patch picks an (image, scale) pair uniformly, a position uniformly inside it and
    independent horizontal and vertical flips, all drawn from ``generator``: the same
    generator state gives the same batch. ``transpose=True`` also transposes each patch
    with probability 1/2, so that the patches take all eight symmetries of the square
    (rotations by 90 degrees included); it draws one more number per patch, so the
    default draws, and the priors trained on them, are unchanged.
    """
    images = _training_images(training_set)  # an unknown set is refused before any load
    if n < 1 or size < 1:
        raise ValueError(f"need n >= 1 and size >= 1, got n={n}, size={size}")
    if size > min(min(im.shape) for im in images):
        raise ValueError(f"patch size {size} exceeds the smallest training image")
    u = torch.rand(n, 6 if transpose else 5, generator=generator, dtype=torch.float64)
    out = torch.empty(n, 1, size, size)
    for k in range(n):
        im = images[int(u[k, 0] * len(images))]
        i = int(u[k, 1] * (im.shape[0] - size + 1))
        j = int(u[k, 2] * (im.shape[1] - size + 1))
        p = im[i : i + size, j : j + size]
        if u[k, 3] < 0.5:
            p = p.flip(1)
        if u[k, 4] < 0.5:
            p = p.flip(0)
        if transpose and u[k, 5] < 0.5:
            p = p.T
        out[k, 0] = p
    return out


def heldout_images(size: int = 64) -> torch.Tensor:
    """The test set: (3 * 4, 1, size, size) crops of the held-out images in [-1, 1].

    Each of ``HELDOUT`` (in that order) is resized to short side ``TEST_SHORT_SIDE *
    size / 64`` and its central square is cut into four quadrants (top-left, top-right,
    bottom-left, bottom-right). Deterministic: no randomness is involved.
    """
    return _quadrants(HELDOUT, size)


def validation_images(size: int = 64) -> torch.Tensor:
    """The validation set: (4, 1, size, size) crops of ``VALIDATION``, cut as
    :func:`heldout_images`; for choosing sampler settings, never for training."""
    return _quadrants(VALIDATION, size)


def photo_test_images(size: int = 64) -> torch.Tensor:
    """A second test set: (5 * 4, 1, size, size) crops of ``PHOTOS``, cut as
    :func:`heldout_images`. Held out from priors trained on the "skimage" set or on a
    Debian set (the committed one: "debian_jigzo"), not from those trained on "photos",
    which contains them."""
    return _quadrants(PHOTOS, size)


def _quadrants(names: tuple[str, ...], size: int) -> torch.Tensor:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    side = TEST_SHORT_SIDE * size // 64
    crops = []
    for name in names:
        im = load_image(name, side)
        i0, j0 = (im.shape[0] - 2 * size) // 2, (im.shape[1] - 2 * size) // 2
        for di in (0, size):
            for dj in (0, size):
                crops.append(im[i0 + di : i0 + di + size, j0 + dj : j0 + dj + size])
    return torch.from_numpy(np.stack(crops)[:, None].copy())
