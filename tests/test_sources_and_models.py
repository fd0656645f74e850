"""Unit tests for the data sources (synthetic, class folders, MedMNIST), the stratified split and
the CNN builder (#2, #6). Everything is generated here and tiny; MedMNIST comes from a local HTTP
server. Broken images, bad npz layouts and failed downloads are in tests/test_bad_inputs.py;
the ResNet50 builder is in tests/test_resnet50.py.
"""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage.data.sources import load_source, medmnist
from skinsage.data.sources.folder import load_folder
from skinsage.data.sources.medmnist import MedmnistError, load_medmnist
from skinsage.data.sources.synthetic import make_synthetic
from skinsage.data.splits import SplitError, stratified_split
from skinsage.errors import SkinSageError
from skinsage.params import SyntheticParams, load_params
from skinsage.prepared import SPLITS

from local_server import QuietHandler, serving

ROOT = Path(__file__).resolve().parents[1]


def params(**overrides):
    return load_params(ROOT / "params.yaml", overrides=overrides)


# --- synthetic --------------------------------------------------------------------------------

def test_synthetic_images_are_seeded_rgb_uint8_at_the_requested_size():
    p = SyntheticParams(num_classes=3, images_per_class=4)
    first, again, other = make_synthetic(p, 20, seed=1), make_synthetic(p, 20, seed=1), make_synthetic(p, 20, seed=2)
    images, labels = first.images["all"], first.labels["all"]
    assert images.shape == (12, 20, 20, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.array_equal(images, again.images["all"]) and np.array_equal(labels, again.labels["all"])
    assert not np.array_equal(images, other.images["all"])
    assert (images != other.images["all"]).mean() > 0.5  # a new draw, not a one-pixel change
    assert len({img.tobytes() for img in images}) == 12  # every image is distinct
    assert images.std() > 10  # not blank


def test_synthetic_names_say_synthetic():
    raw = make_synthetic(SyntheticParams(num_classes=4, images_per_class=3), 16, seed=0)
    assert raw.class_names == ["synthetic_circle", "synthetic_square", "synthetic_triangle", "synthetic_cross"]
    assert "synthetic" in raw.name and "not skin images" in raw.name
    assert not raw.has_official_split and set(raw.images) == {"all"}


def test_synthetic_at_other_sizes_and_too_many_classes():
    raw = make_synthetic(SyntheticParams(num_classes=2, images_per_class=3), 33, seed=5)
    assert raw.images["all"].shape == (6, 33, 33, 3)
    with pytest.raises(SkinSageError, match="data.synthetic.num_classes: at most 6 shapes exist, got 7"):
        make_synthetic(SyntheticParams(num_classes=7, images_per_class=3), 16, seed=0)


def test_load_source_makes_synthetic_images_at_the_selected_models_size():
    p = params(**{"model": "cnn", "data.source": "synthetic", "data.synthetic.num_classes": 2,
                  "data.synthetic.images_per_class": 3, "data.seed": 11})
    raw = load_source(p)
    assert raw.images["all"].shape == (6, p.models.cnn.image_size, p.models.cnn.image_size, 3)
    direct = make_synthetic(p.data.synthetic, p.image_size, seed=11)
    assert np.array_equal(raw.images["all"], direct.images["all"])  # seeded by data.seed


# --- class folders ----------------------------------------------------------------------------

COLOURS = {"nevus": (40, 200, 60), "bcc": (200, 40, 40), "melanoma": (40, 40, 200)}


def write_image(path: Path, colour, size, fmt: str, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode == "P":  # an exact palette, not Pillow's dithered web palette
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def class_tree(root: Path) -> dict[str, int]:
    """Three classes (made out of sorted order) of solid-colour JPEG/PNG files of various sizes."""
    counts = {}
    for c, name in enumerate(["nevus", "bcc", "melanoma"]):  # created unsorted on purpose
        colour = COLOURS[name]
        files = [
            (f"{name}_wide.jpg", (40, 24), "JPEG", "RGB"),
            (f"{name}_tall.png", (13, 50), "PNG", "RGB"),
            (f"{name}_square.jpeg", (64, 64), "JPEG", "RGB"),
            (f"{name}_tiny.png", (5, 5), "PNG", "RGB"),
            (f"{name}_alpha.png", (30, 30), "PNG", "RGBA"),
            (f"sub dir/{name}_palette.png", (21, 17), "PNG", "P"),
        ][: 4 + c]  # 4, 5 and 6 images
        for filename, size, fmt, mode in files:
            write_image(root / name / filename, colour, size, fmt, mode)
        counts[name] = len(files)
    return counts


def test_folder_classes_are_the_sorted_folder_names_and_every_image_is_decoded(tmp_path, monkeypatch):
    root = tmp_path / "lesions"
    counts = class_tree(root)
    listing = Path.iterdir  # file systems list in any order: make this one list in reverse
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self), reverse=True)))
    raw = load_folder(root, 20, workers=1)

    assert raw.class_names == ["bcc", "melanoma", "nevus"]
    assert raw.skipped == [] and not raw.has_official_split
    images, labels, paths = raw.images["all"], raw.labels["all"], raw.paths["all"]
    assert images.dtype == np.uint8 and images.shape == (sum(counts.values()), 20, 20, 3)
    assert labels.dtype == np.int64 and len(labels) == len(paths) == len(images)
    assert {name: int((labels == i).sum()) for i, name in enumerate(raw.class_names)} == counts
    for image, label, path in zip(images, labels, paths):
        folder = Path(path).relative_to(root).parts[0]
        assert raw.class_names[label] == folder, path            # label = the top folder's index
        assert np.abs(image.astype(int) - COLOURS[folder]).max() <= 4, path  # and the pixels are its


def test_folder_loading_is_the_same_twice(tmp_path):
    class_tree(tmp_path / "lesions")
    a, b = load_folder(tmp_path / "lesions", 12, workers=1), load_folder(tmp_path / "lesions", 12, workers=1)
    assert np.array_equal(a.images["all"], b.images["all"]) and a.paths == b.paths
    assert a.images["all"].shape[1:] == (12, 12, 3)


# --- stratified split -------------------------------------------------------------------------

CLASS_SIZES = (47, 18, 9)  # fractions that need rounding, not truncation
NAMES = ["common", "medium", "rare"]


def imbalanced_labels() -> np.ndarray:
    labels = np.repeat(np.arange(len(CLASS_SIZES)), CLASS_SIZES)
    return np.random.default_rng(3).permutation(labels)  # classes interleaved, as on disk


def test_stratified_split_keeps_each_class_in_proportion():
    labels = imbalanced_labels()
    index = stratified_split(labels, val=0.1, test=0.2, seed=42, class_names=NAMES)
    assert set(index) == set(SPLITS)
    per_class = {s: np.bincount(labels[idx], minlength=3).tolist() for s, idx in index.items()}
    # test = round(n * 0.2), val = round(n * 0.1) (at least 1), train = the rest, per class
    assert per_class == {"test": [9, 4, 2], "val": [5, 2, 1], "train": [33, 12, 6]}
    for split, fraction in (("test", 0.2), ("val", 0.1), ("train", 0.7)):
        shares = np.array(per_class[split]) / np.array(CLASS_SIZES)
        assert np.allclose(shares, fraction, atol=0.05), (split, shares)


def test_stratified_split_partitions_the_images():
    labels = imbalanced_labels()
    index = stratified_split(labels, val=0.1, test=0.2, seed=42, class_names=NAMES)
    together = np.concatenate(list(index.values()))
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)  # no image twice
    assert np.array_equal(np.sort(together), np.arange(len(labels)))                  # none lost
    for idx in index.values():
        assert idx.dtype.kind == "i" and np.array_equal(idx, np.sort(idx))


def test_stratified_split_is_seeded():
    labels = imbalanced_labels()
    def split(seed):
        return stratified_split(labels, val=0.1, test=0.2, seed=seed, class_names=NAMES)
    a, b, c = split(7), split(7), split(8)
    assert all(np.array_equal(a[s], b[s]) for s in SPLITS)
    assert not np.array_equal(a["test"], c["test"]) and not np.array_equal(a["train"], c["train"])
    # another seed draws other images but keeps the per-class counts
    assert all(np.array_equal(np.bincount(labels[a[s]]), np.bincount(labels[c[s]])) for s in SPLITS)


def test_stratified_split_gives_every_class_one_image_per_split_when_fractions_round_to_zero():
    labels = np.array([0] * 30 + [1] * 3)
    index = stratified_split(labels, val=0.05, test=0.05, seed=0, class_names=["a", "b"])
    assert [int((labels[index[s]] == 1).sum()) for s in ("train", "val", "test")] == [1, 1, 1]
    with pytest.raises(SplitError, match="class 'b' has 2 usable image"):
        stratified_split(np.array([0, 0, 0, 1, 1]), 0.2, 0.2, seed=0, class_names=["a", "b"])


# --- MedMNIST ---------------------------------------------------------------------------------

COUNTS = {"train": 14, "val": 7, "test": 7}  # two, one and one of each of DermaMNIST's 7 classes


def medmnist_npz(size: int, label_of=lambda i: i % 7) -> tuple[bytes, dict[str, np.ndarray]]:
    """A MedMNIST-layout npz: {split}_images (N, S, S, 3) uint8, {split}_labels (N, 1) uint8.
    Each image is one distinct solid colour, so resizing keeps it exactly and order is checkable."""
    arrays, k = {}, 0
    for split, n in COUNTS.items():
        colours = np.array([(9 * (k + i), 255 - 9 * (k + i), (37 * (k + i)) % 256) for i in range(n)], np.uint8)
        arrays[f"{split}_images"] = np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy()
        arrays[f"{split}_labels"] = np.array([[label_of(k + i)] for i in range(n)], dtype=np.uint8)
        k += n
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue(), arrays


class _Server(QuietHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append(self.path)
        self.send_body(self.files.get(self.path))


@pytest.fixture(scope="module")
def server():
    with serving(_Server) as url:
        yield url


@pytest.fixture
def served_dermamnist_64(server, monkeypatch):
    """dermamnist_64.npz on the local server, its URL and MD5 in the INFO that medmnist.py reads."""
    body, arrays = medmnist_npz(64)
    _Server.files, _Server.requests = {"/dermamnist_64.npz": body}, []
    info = copy.deepcopy(medmnist.medmnist_info())
    info["dermamnist"]["url_64"] = f"{server}/dermamnist_64.npz"
    info["dermamnist"]["MD5_64"] = hashlib.md5(body).hexdigest()
    monkeypatch.setattr(medmnist, "medmnist_info", lambda: info)
    return body, arrays, info


def test_medmnist_download_keeps_the_official_split_and_resizes(served_dermamnist_64, tmp_path, capsys):
    from skinsage.data.prepare import prepare

    body, arrays, info = served_dermamnist_64
    p = params(**{"model": "cnn", "models.cnn.image_size": 32, "data.source": "medmnist",
                  "data.medmnist.flag": "dermamnist", "data.medmnist.size": "auto",
                  "data.medmnist.path": str(tmp_path / "raw"), "data.min_per_class": 1})
    data = prepare(p, tmp_path / "prepared", tmp_path / "data.json")

    assert _Server.requests == ["/dermamnist_64.npz"]  # auto: the smallest official size >= 32 px
    assert (tmp_path / "raw" / "dermamnist_64.npz").read_bytes() == body
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["dermamnist_64.npz"]
    assert data.dataset == "MedMNIST dermamnist (64 px, official split)" and data.image_size == 32
    assert data.class_names == [info["dermamnist"]["label"][str(i)] for i in range(7)]
    for split, n in COUNTS.items():  # official sizes kept: never re-split
        images, labels = data.splits[split].images, data.splits[split].labels
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and np.array_equal(labels, arrays[f"{split}_labels"][:, 0])
        assert np.array_equal(images, arrays[f"{split}_images"][:, :32, :32])  # solid colours, in order
    assert "prepared MedMNIST dermamnist (64 px, official split): 7 classes at 32 px" in capsys.readouterr().out

    again = load_source(p)  # the verified file is reused: no second request
    assert _Server.requests == ["/dermamnist_64.npz"]
    assert all(np.array_equal(again.images[s], data.splits[s].images) for s in SPLITS)


def test_medmnist_explicit_size_downloads_that_file(served_dermamnist_64, tmp_path):
    p = params(**{"model": "cnn", "models.cnn.image_size": 16, "data.source": "medmnist",
                  "data.medmnist.size": 64, "data.medmnist.path": str(tmp_path)})
    raw = load_medmnist(p.data.medmnist, p.image_size)
    assert _Server.requests == ["/dermamnist_64.npz"]  # 64 as asked, although 28 would cover 16 px
    assert raw.has_official_split and raw.images["test"].shape == (7, 16, 16, 3)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a local npz must not be downloaded")
    monkeypatch.setattr(medmnist, "fetch", refuse)
    monkeypatch.setattr(medmnist.urllib.request, "urlopen", refuse)


def test_medmnist_path_to_a_local_npz_is_used_as_is(tmp_path, no_network):
    body, arrays = medmnist_npz(28)
    (tmp_path / "mine.npz").write_bytes(body)
    p = params(**{"model": "cnn", "models.cnn.image_size": 40, "data.source": "medmnist",
                  "data.medmnist.flag": "dermamnist", "data.medmnist.path": str(tmp_path / "mine.npz")})
    raw = load_source(p)
    assert raw.name == "dermamnist from local file mine.npz" and len(raw.class_names) == 7
    assert sorted(f.name for f in tmp_path.iterdir()) == ["mine.npz"]  # nothing downloaded beside it
    for split, n in COUNTS.items():
        assert raw.images[split].shape == (n, 40, 40, 3)  # upscaled from 28 px to the model's size
        assert np.array_equal(raw.images[split][:, 0, 0], arrays[f"{split}_images"][:, 0, 0])
        assert np.array_equal(raw.labels[split], arrays[f"{split}_labels"][:, 0])


def test_local_npz_labels_are_checked_against_the_flags_classes(tmp_path, no_network):
    """Label 8 is fine for PathMNIST (9 classes) but out of range for DermaMNIST (7)."""
    body, _ = medmnist_npz(28, label_of=lambda i: 8 if i == 25 else i % 7)  # one test label is 8
    (tmp_path / "local.npz").write_bytes(body)
    derma = params(**{"data.medmnist.flag": "dermamnist", "data.medmnist.path": str(tmp_path / "local.npz")})
    with pytest.raises(MedmnistError, match=r"local\.npz:test_labels: labels must be in 0\.\.6, found 0\.\.8"):
        load_medmnist(derma.data.medmnist, 28)
    path = params(**{"data.medmnist.flag": "pathmnist", "data.medmnist.path": str(tmp_path / "local.npz")})
    raw = load_medmnist(path.data.medmnist, 28)
    assert len(raw.class_names) == 9 and raw.labels["test"].max() == 8


def test_unknown_medmnist_flag_lists_the_2d_flags(tmp_path, no_network):
    p = params(**{"data.medmnist.flag": "skinmnist", "data.medmnist.path": str(tmp_path)})
    with pytest.raises(MedmnistError,
                       match="unknown 2D MedMNIST dataset 'skinmnist'; choose one of: .*dermamnist") as caught:
        load_medmnist(p.data.medmnist, 28)
    assert "organmnist3d" not in str(caught.value)


# --- the CNN builder --------------------------------------------------------------------------

SIZE, NUM_CLASSES = 16, 5


def cnn_params(**overrides):
    return params(**{"model": "cnn", "models.cnn.image_size": SIZE, "models.cnn.filters": [4, 8, 8],
                     "models.cnn.dense_units": 12, "models.cnn.batch_norm": False,
                     "models.cnn.stem_stride": 1, "models.cnn.pooling": "flatten", **overrides}).models.cnn


@pytest.fixture(scope="module")
def cnn():
    from skinsage.model.architectures import build_cnn
    from skinsage.train.trainer import seed_everything

    seed_everything(0)
    return build_cnn(NUM_CLASSES, cnn_params())


def test_cnn_takes_uint8_images_and_gives_one_probability_per_class(cnn):
    assert cnn.inputs[0].dtype == "uint8" and cnn.input_shape == (None, SIZE, SIZE, 3)
    assert cnn.output_shape == (None, NUM_CLASSES)
    x = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    probs = np.asarray(cnn(x, training=False))
    assert probs.shape == (6, NUM_CLASSES) and probs.dtype == np.float32
    assert (probs > 0).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs, probs[:1])  # depends on the image
    assert np.allclose(cnn.predict(x, verbose=0), probs, atol=1e-6)


def test_cnn_layers_are_the_seed_architecture_and_all_trainable(cnn):
    from keras import layers

    kinds = [type(layer).__name__ for layer in cnn.layers]
    assert kinds == ["Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D",
                     "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense"]
    assert (kinds.count("Conv2D"), kinds.count("MaxPooling2D"), kinds.count("Flatten"),
            kinds.count("Dense")) == (3, 3, 1, 2)
    convs = [layer for layer in cnn.layers if isinstance(layer, layers.Conv2D)]
    assert [c.filters for c in convs] == [4, 8, 8] and all(c.kernel_size == (3, 3) for c in convs)
    dense = [layer for layer in cnn.layers if isinstance(layer, layers.Dense)]
    assert [d.units for d in dense] == [12, NUM_CLASSES]
    assert dense[-1].activation.__name__ == "softmax" and dense[-1].name == "probabilities"
    assert cnn.get_layer(index=0).scale == pytest.approx(1 / 255)
    assert cnn.trainable and all(layer.trainable for layer in cnn.layers)
    assert len(cnn.trainable_weights) == len(cnn.weights) == 10 and not cnn.non_trainable_weights
    flat = SIZE // 8 * (SIZE // 8) * 8  # three 2x poolings of 16 px, 8 channels
    assert dense[0].kernel.shape == (flat, 12)


def test_same_seed_gives_the_same_initial_weights():
    from skinsage.model.architectures import build_cnn
    from skinsage.train.trainer import seed_everything

    def weights(seed):
        seed_everything(seed)
        return build_cnn(3, cnn_params()).get_weights()

    a, b, c = weights(123), weights(123), weights(124)
    assert len(a) == 10 and all(np.array_equal(x, y) for x, y in zip(a, b))
    kernels = [i for i, w in enumerate(a) if w.ndim > 1]
    assert all(not np.array_equal(a[i], c[i]) for i in kernels)


def test_build_model_selects_the_cnn_and_refuses_unknown_names():
    from skinsage.model.architectures import ModelError, build_model

    model = build_model("cnn", 2, cnn_params(**{"models.cnn.image_size": 24}))
    assert model.name == "skinsage_cnn" and model.output_shape == (None, 2)
    assert model.input_shape == (None, 24, 24, 3) and model.inputs[0].dtype == "uint8"
    for name in ("vgg16", "CNN", ""):
        with pytest.raises(ModelError, match=f"^unknown model '{name}'; choose cnn or resnet50$"):
            build_model(name, 2, cnn_params())
    assert issubclass(ModelError, SkinSageError)


def test_the_split_follows_data_seed_not_the_training_seed(tmp_path):
    """`dvc exp run -S seed=N` must retrain on the same test set: only data.seed moves the split."""
    from skinsage.data.prepare import prepare

    def test_images(**overrides):
        p = params(**{"model": "cnn", "models.cnn.image_size": 16, "data.source": "synthetic",
                      "data.synthetic.images_per_class": 20, **overrides})
        folder = tmp_path / "_".join(f"{k}{v}" for k, v in overrides.items())
        return prepare(p, folder / "prepared", folder / "data.json").splits["test"].images

    reference = test_images(seed=1, **{"data.seed": 42})
    assert np.array_equal(test_images(seed=2, **{"data.seed": 42}), reference)
    assert not np.array_equal(test_images(seed=1, **{"data.seed": 7}), reference)
