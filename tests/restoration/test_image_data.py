"""The restoration image data: a split by whole image, deterministic crops and patches."""

import os

import pytest
import torch

pytest.importorskip("skimage")

from diffsci.restoration import data  # noqa: E402


def test_the_three_splits_share_no_image():
    train, test, val = set(data.TRAINING), set(data.HELDOUT), set(data.VALIDATION)
    assert not (train & test) and not (train & val) and not (test & val)
    assert len(train) == len(data.TRAINING)  # no image listed twice
    photos = set(data.TRAINING_SETS["photos"])
    assert train < photos and not (photos & test) and not (photos & val)
    assert len(photos) == len(data.TRAINING_SETS["photos"])


@pytest.mark.parametrize(
    "name,n_photos", [("debian", 43), ("debian_lomiri", 57), ("debian_jigzo", 68)]
)
def test_the_debian_sets_add_only_new_pictures(name, n_photos):
    debian = data.TRAINING_SETS[name]
    assert debian[: len(data.TRAINING)] == data.TRAINING
    assert set(debian[len(data.TRAINING) :]) <= set(data.DEBIAN_PHOTOS)
    assert len(set(debian)) == len(debian) == len(data.TRAINING) + n_photos
    assert not set(debian) & set(data.HELDOUT + data.VALIDATION + data.PHOTOS)
    assert set(data.DEBIAN_PACKAGES) == {p for p, _ in data.DEBIAN_PHOTOS.values()}


def test_the_lomiri_set_extends_the_debian_set():
    # "debian" keeps its 57 names, so the sixth pass's reproduce command still holds
    debian, lomiri = data.TRAINING_SETS["debian"], data.TRAINING_SETS["debian_lomiri"]
    assert lomiri[: len(debian)] == debian
    assert set(lomiri) == set(data.TRAINING) | set(data._DEBIAN_FOUR) | set(data._LOMIRI)
    assert all(n.startswith("lomiri_") for n in lomiri[len(debian) :])


def test_the_jigzo_set_extends_the_lomiri_set():
    lomiri, jigzo = data.TRAINING_SETS["debian_lomiri"], data.TRAINING_SETS["debian_jigzo"]
    assert jigzo[: len(lomiri)] == lomiri
    assert set(jigzo) == set(data.TRAINING) | set(data.DEBIAN_PHOTOS)
    assert all(n.startswith("jigzo_") for n in jigzo[len(lomiri) :])
    assert "jigzo_penguin" not in jigzo  # CC-BY-NC, left out


def _write_pzl(path, atlas, box, thumb=None):
    """A jigzo puzzle file as the game writes one: header, map, then named entries."""
    import io

    from PIL import Image

    def jpeg(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=100)
        return buf.getvalue()

    tmap = b"#texture map data\ncrop000 0 0 8 8 0 0 0 0 0 0\nimage %d %d %d %d 1 1    \n" % box
    head = b"PzlF\n0.1\nt\nhttp://example\nt.map\n%d\n" % len(tmap) + tmap
    body = b""
    for name, blob in (
        ("t-t.jpg", jpeg(thumb if thumb is not None else atlas[:8, :8])),
        ("t.jpg", jpeg(atlas)),
    ):
        body += name.encode() + b"\n%d\n" % len(blob) + blob
    path.write_bytes(head + body)


def test_a_jigzo_puzzle_file_gives_its_picture_without_the_frame(tmp_path):
    import numpy as np

    atlas = np.zeros((64, 64, 3), np.uint8)  # a dark atlas, the picture at (8, 4, 40, 30)
    atlas[5:33, 9:47] = 200  # inside the one-pixel frame of the box
    _write_pzl(tmp_path / "t.pzl", atlas, (8, 4, 40, 30))
    img = data._pzl_image(str(tmp_path / "t.pzl"))
    assert img.shape == (28, 38, 3)
    assert abs(float(img.mean()) - 200) < 3  # JPEG at quality 100: within a few levels
    (tmp_path / "bad.pzl").write_bytes(b"JPEG\n")
    with pytest.raises(ValueError, match="not a jigzo puzzle"):
        data._pzl_image(str(tmp_path / "bad.pzl"))


def test_a_missing_debian_photo_names_its_package(monkeypatch, tmp_path):
    missing = str(tmp_path / "absent.jpg")
    monkeypatch.setitem(data.DEBIAN_PHOTOS, "test_absent", ("some-package", missing))
    with pytest.raises(FileNotFoundError, match="apt-get install some-package"):
        data.load_image("test_absent", 128)


def _thumb(name):
    import skimage.transform

    t = skimage.transform.resize(data.load_image(name, 128), (32, 32), anti_aliasing=True)
    return torch.from_numpy((t - t.mean()) / t.std()).flatten()


@pytest.mark.parametrize("photo", data.PHOTOS)
def test_added_photos_are_not_a_test_or_validation_picture(photo):
    # a copy under another name (PyWavelets ships skimage's camera as pywt.data.camera)
    # correlates 0.9997 with its test image; the distinct photographs measured at most
    # 0.54 (china against camera)
    t = _thumb(photo)
    for other in data.HELDOUT + data.VALIDATION:
        corr = float(t @ _thumb(other)) / t.numel()
        assert abs(corr) < 0.9, (photo, other, corr)


_DEBIAN_INSTALLED = all(
    os.path.isfile(data._debian_path(path)) for _, path in data.DEBIAN_PHOTOS.values()
)


def test_debian_photos_are_read_under_diffsci_debian_root(monkeypatch, tmp_path):
    # a package unpacked without root (dpkg -x) is read from under $DIFFSCI_DEBIAN_ROOT
    import numpy as np
    from PIL import Image

    installed = "/usr/share/backgrounds/diffsci-test/photo.png"
    path = tmp_path / installed.lstrip("/")
    path.parent.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    monkeypatch.setitem(data.DEBIAN_PHOTOS, "test_rooted", ("some-package", installed))
    monkeypatch.setenv("DIFFSCI_DEBIAN_ROOT", str(tmp_path))
    assert np.array_equal(data._raw_image("test_rooted"), pixels)
    (tmp_path / "elsewhere").mkdir()  # a folder without the file
    monkeypatch.setenv("DIFFSCI_DEBIAN_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(
        FileNotFoundError, match="apt-get install some-package.*DIFFSCI_DEBIAN_ROOT"
    ):
        data._raw_image("test_rooted")
    for bad in ("", str(tmp_path / "absent")):  # not a folder: refused, never read relative
        monkeypatch.setenv("DIFFSCI_DEBIAN_ROOT", bad)
        with pytest.raises(FileNotFoundError, match="DIFFSCI_DEBIAN_ROOT=.* is not a folder"):
            data.debian_root()


@pytest.mark.skipif(
    not _DEBIAN_INSTALLED,
    reason=f"the Debian photographs are not installed: apt-get install {' '.join(data.DEBIAN_PACKAGES)}",
)
def test_debian_photos_load_and_are_not_a_held_out_picture():
    # the largest thumbnail correlation measured between a Debian photo and a test,
    # validation or photos-split picture was 0.74 (opencv orange against china, two
    # smooth centres; 0.70 for the Lomiri photos, free against china; 0.58 for jigzo's,
    # clouds against china); a copy correlates above 0.99
    others = [_thumb(o) for o in data.HELDOUT + data.VALIDATION + data.PHOTOS]
    for name in data.DEBIAN_PHOTOS:
        im = data.load_image(name, 128)
        assert min(im.shape) == 128 and im.std() > 0.05, name
        t = _thumb(name)
        corr = max(abs(float(t @ o)) / t.numel() for o in others)
        assert corr < 0.9, (name, corr)


@pytest.mark.parametrize(
    "fn,n",
    [(data.heldout_images, 12), (data.validation_images, 4), (data.photo_test_images, 20)],
)
def test_crops_are_deterministic_images_in_range(fn, n):
    x = fn(64)
    assert x.shape == (n, 1, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert float(x.std()) > 0.1  # real pictures, not blank crops
    assert torch.equal(x, fn(64))
    with pytest.raises(ValueError, match="size"):
        fn(0)


def test_validation_crops_differ_from_every_test_crop():
    v, t = data.validation_images(64), data.heldout_images(64)
    assert float((v[:, None] - t[None]).abs().amax(dim=(2, 3, 4)).min()) > 0.5


def test_every_image_loads_at_every_scale():
    ims = data.training_images()
    assert len(ims) == len(data.TRAINING) * len(data.TRAIN_SHORT_SIDES)
    # short sides are the requested scale, or the full image when it is smaller
    assert min(min(im.shape) for im in ims) >= min(data.TRAIN_SHORT_SIDES)
    moto = data.load_image("motorcycle", 128)  # the left view of stereo_motorcycle
    assert min(moto.shape) == 128 and -1 <= moto.min() < moto.max() <= 1


def test_the_photos_set_loads_and_unknown_sets_are_refused():
    ims = data.training_images("photos")
    assert len(ims) == len(data.TRAINING_SETS["photos"]) * len(data.TRAIN_SHORT_SIDES)
    assert all(-1 <= float(im.min()) < float(im.max()) <= 1 for im in ims)
    p = data.training_patches(4, 32, torch.Generator().manual_seed(0), "photos")
    assert p.shape == (4, 1, 32, 32)
    with pytest.raises(ValueError, match="unknown training set"):
        data.training_images("imagenet")
    with pytest.raises(ValueError, match="unknown training set"):
        data.training_patches(2, 32, None, "imagenet")


def test_training_patches_follow_the_generator():
    a = data.training_patches(5, 32, torch.Generator().manual_seed(3))
    b = data.training_patches(5, 32, torch.Generator().manual_seed(3))
    c = data.training_patches(5, 32, torch.Generator().manual_seed(4))
    assert a.shape == (5, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="exceeds"):
        data.training_patches(1, 1000)
    with pytest.raises(ValueError, match="n >= 1"):
        data.training_patches(0, 32)


def test_transposed_patches_are_the_flipped_patches_transposed_at_random():
    g = torch.Generator().manual_seed(5)
    p = data.training_patches(40, 32, g, transpose=True)
    u = torch.rand(40, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    images = data._training_images("skimage")
    for k in range(40):  # rebuild each patch from its six draws
        im = images[int(u[k, 0] * len(images))]
        i, j = int(u[k, 1] * (im.shape[0] - 31)), int(u[k, 2] * (im.shape[1] - 31))
        q = im[i : i + 32, j : j + 32]
        q = q.flip(1) if u[k, 3] < 0.5 else q
        q = q.flip(0) if u[k, 4] < 0.5 else q
        assert torch.equal(p[k, 0], q.T if u[k, 5] < 0.5 else q), k
    assert 5 < int((u[:, 5] < 0.5).sum()) < 35  # both kinds occur
    # the default draws five numbers per patch, as before the option existed
    g = torch.Generator().manual_seed(5)
    data.training_patches(3, 32, g)
    h = torch.Generator().manual_seed(5)
    torch.rand(3, 5, generator=h, dtype=torch.float64)
    assert torch.equal(g.get_state(), h.get_state())


def test_unknown_image_is_refused():
    with pytest.raises(ValueError, match="unknown image"):
        data.load_image("lena")
