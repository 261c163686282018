"""Bad input: odd and broken images, odd dataset layouts, damaged model files and unsafe arrays.

Readable images come out as RGB uint8 (H, W, 3); unreadable ones are skipped and reported, never fatal.
Layout problems the pipeline cannot work around are a PipelineError naming the class or folder and the fix.
Zip files that are not zips, zip entries escaping the target and symlinks in the download are covered
by test_download.py; missing model files and a class-count mismatch by test_predict.py; hand model bundles
that are missing or not the pinned ones by test_hand_model.py.
"""
import csv
import hashlib
import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asl_pipeline import dataset, images
from asl_pipeline.config import SPLITS, SplitParams
from asl_pipeline.errors import PipelineError


# ---------------------------------------------------------------- image files

def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(seed: int, shape=(6, 9, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG, grey (H, W) or RGB (H, W, 3), written by hand: Pillow cannot write 16-bit RGB."""
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    c, m, y, k = np.moveaxis(cmyk.astype(float) / 255, -1, 0)
    return 255 * np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=-1)


def scaled16(values: np.ndarray) -> np.ndarray:
    """What 16-bit values look like in 8 bits: 0 -> 0, 65535 -> 255, proportional in between."""
    values = values if values.ndim == 3 else np.repeat(values[:, :, None], 3, axis=2)
    return values.astype(float) / 257


def readable_rgb():
    pixels = noise(1)
    return encode(Image.fromarray(pixels), "PNG"), pixels, 0


def readable_jpeg():
    pixels = np.broadcast_to(np.array([40, 160, 220], np.uint8), (16, 24, 3))  # flat: JPEG keeps it nearly
    return encode(Image.fromarray(np.ascontiguousarray(pixels)), "JPEG", quality=95), pixels, 3


def readable_rgba():
    pixels = noise(2, (6, 9, 4))
    pixels[0, :, 3] = 0  # fully transparent pixels keep their colour channels
    return encode(Image.fromarray(pixels, "RGBA"), "PNG"), pixels[:, :, :3], 0


def readable_grayscale():
    gray = noise(3, (7, 5))
    return encode(Image.fromarray(gray, "L"), "PNG"), np.repeat(gray[:, :, None], 3, axis=2), 0


def readable_palette():
    indices = noise(4, (5, 8)) % 16
    palette = noise(5, (16, 3))
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    return encode(image, "GIF"), palette[indices], 0


def readable_16bit_gray():
    values = np.linspace(0, 65535, 48).reshape(6, 8).astype(np.uint16)
    return png16(values), scaled16(values), 1


def readable_16bit_gray_dark():
    # Every value below 256: still 16-bit, so near black, not mistaken for 8-bit values.
    values = (np.arange(40).reshape(5, 8) * 6).astype(np.uint16)
    return png16(values), scaled16(values), 1


def readable_16bit_rgb():
    values = np.random.default_rng(6).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    return png16(values), scaled16(values), 1


def readable_cmyk_jpeg():
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16] = (30, 60, 90, 40)
    cmyk[:, 16:] = (200, 10, 100, 20)
    return encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95), cmyk_to_rgb(cmyk), 4


def readable_one_pixel():
    pixels = noise(7, (1, 1, 3))
    return encode(Image.fromarray(pixels), "PNG"), pixels, 0


READABLE = {
    "rgb.png": readable_rgb,
    "flat.jpg": readable_jpeg,
    "rgba.png": readable_rgba,
    "gray.png": readable_grayscale,
    "palette.gif": readable_palette,
    "gray16.png": readable_16bit_gray,
    "dark16.png": readable_16bit_gray_dark,
    "rgb16.png": readable_16bit_rgb,
    "cmyk.jpg": readable_cmyk_jpeg,
    "one pixel.png": readable_one_pixel,
}


def unreadable_files() -> dict:
    jpeg = encode(Image.fromarray(noise(8, (32, 32, 3))), "JPEG")
    rng = np.random.default_rng(9)
    png = encode(Image.fromarray(noise(10, (16, 16, 3))), "PNG")
    # A PNG header that claims 14000 x 14000 pixels: past Pillow's decompression-bomb limit.
    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 14000, 14000, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b""))
    return {
        "zero bytes.jpg": b"",
        "text.jpg": "this is a text file, not a photo\n".encode(),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "corrupt.jpg": jpeg[:len(jpeg) // 2] + rng.bytes(len(jpeg) // 2 - 2) + jpeg[-2:],  # scan data garbled
        "header only.jpg": jpeg[:20] + rng.bytes(200),
        "corrupt.png": png[:60] + bytes(20) + png[80:],
        "bomb.png": bomb,
    }


UNREADABLE = unreadable_files()


@pytest.mark.parametrize("name", READABLE)
def test_readable_formats_become_rgb_uint8(tmp_path, name):
    data, expected, tolerance = READABLE[name]()
    path = tmp_path / name
    path.write_bytes(data)
    rgb = images.load_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape[:2] + (3,)
    assert np.abs(rgb.astype(float) - expected).max() <= tolerance
    digest, fingerprint, reason = images.inspect(path)
    assert reason is None and digest == hashlib.sha256(data).hexdigest()
    assert fingerprint.shape == (256,) and np.isfinite(fingerprint).all()


def test_8000_by_8000_jpeg_is_readable(tmp_path):
    colour = np.array([200, 30, 90])
    path = tmp_path / "huge.jpg"
    path.write_bytes(encode(Image.new("RGB", (8000, 8000), tuple(colour.tolist())), "JPEG", quality=90))
    rgb = images.load_rgb(path)
    assert rgb.shape == (8000, 8000, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[::500, ::500].astype(int) - colour).max() <= 3


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_raise_unreadable_image_naming_the_file(tmp_path, name):
    path = tmp_path / "Fotos ñ" / name
    path.parent.mkdir()
    path.write_bytes(UNREADABLE[name])
    with pytest.raises(images.UnreadableImage) as caught:
        images.load_rgb(path)
    assert str(path) in str(caught.value) and caught.value.reason
    # skipped.csv is a DVC output: a reason must not change between runs (no object addresses).
    assert not re.search(r"0x[0-9a-fA-F]{4,}", caught.value.reason), caught.value.reason
    assert "\n" not in caught.value.reason
    assert images.inspect(path) == (None, None, caught.value.reason)


def test_folder_named_like_an_image_is_unreadable(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(images.UnreadableImage, match="folder.jpg"):
        images.load_rgb(tmp_path / "folder.jpg")
    assert images.inspect(tmp_path / "folder.jpg")[2]


def test_a_16_bit_grey_png_of_4096_pixels_or_more_is_read_scaled_down():
    # Pillow reduces no 16-bit image: at twice the read side or more, it is scaled to 8 bits first.
    values = np.tile(np.linspace(0, 65535, 4200).astype(np.uint16), (6, 1))
    rgb = images.decode_rgb(png16(values), max_side=2048)
    assert rgb.shape == (3, 2048, 3) and rgb.dtype == np.uint8
    assert rgb[:, 0].max() <= 1 and rgb[:, -1].min() >= 254  # scaled, not clipped at 255 (which reads white)
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


READ_SIDE = 256  # the read side of the budget tests: a 1024-pixel JPEG decodes at 1/4 scale


def cheap_to_read(header) -> bool:
    """Within a budget that a 1024 x 1024 image decoded at 1/4 scale passes and one decoded whole does not."""
    return header.decode_bytes <= 1.5 * 1024 * 1024


@pytest.mark.parametrize("fmt, mode, options, cheap", [
    ("JPEG", "RGB", {}, True),  # decoded at 1/4 scale (draft)
    ("JPEG", "CMYK", {}, True),  # so is a CMYK one, 4 bytes a pixel
    ("JPEG", "RGB", {"progressive": True}, False),  # its coefficients are held whole, whatever the scale
    ("PNG", "RGB", {}, False),  # decoded whole: PNG, TIFF, WebP, BMP, GIF have no reduced decoding
    ("PNG", "RGBA", {}, False),
    ("TIFF", "RGB", {}, False),
    ("WEBP", "RGB", {}, False),
    ("WEBP", "RGB", {"lossless": True}, False),
    ("BMP", "RGB", {}, False),
])
def test_the_decode_cost_counts_pixels_bytes_per_pixel_and_reduced_decoding(fmt, mode, options, cheap):
    data = encode(Image.fromarray(noise(3, (1024, 1024, 3))).convert(mode), fmt, **options)
    header = images.read_header(data, "photo", READ_SIDE)
    assert (header.kind, header.width, header.height) == (fmt, 1024, 1024)
    assert cheap_to_read(header) == cheap


def test_a_webp_header_is_read_without_making_its_decoder(monkeypatch):
    # Pillow's WebP opener makes libwebp's decoder, which takes its canvases: an 87 KB flat 7000 x 7000 WebP took
    # 750 MB before any check.
    data = encode(Image.new("RGB", (7000, 7000), (10, 10, 10)), "WEBP", quality=50)
    monkeypatch.setattr("PIL.WebPImagePlugin._webp.WebPAnimDecoder", lambda *args: pytest.fail("decoder made"))
    header = images.read_header(data, "flat.webp", 2048)
    assert (header.kind, header.width, header.height) == ("WEBP", 7000, 7000)
    assert header.decode_bytes > 49_000_000 * 4 * 2  # the picture and libwebp's two canvases, at least


@pytest.mark.parametrize("side, length", [(7000, 101), (1000, 2000)])
def test_a_png_too_short_for_the_pixels_it_declares_is_refused_before_decoding(monkeypatch, side, length):
    flat = encode(Image.new("RGB", (side, side), (10, 10, 10)), "PNG", optimize=True)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(images.UnreadableImage, match=f"cut short: its {length:,} bytes cannot hold the {side} x {side}"):
        images.read_header(flat[:length], "photo.png")


@pytest.mark.parametrize("fmt, options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("WEBP", {}),
                                          ("TIFF", {}), ("GIF", {}), ("BMP", {})])
def test_a_truncated_file_of_every_format_is_refused(fmt, options):
    data = encode(Image.fromarray(noise(4, (300, 400, 3))), fmt, **options)
    with pytest.raises(images.UnreadableImage, match="not a readable image"):
        images.decode_rgb(data[:len(data) // 2], "cut.img", max_side=2048)


# ---------------------------------------------------------------- the split stage on a messy dataset

CLASSES = ("A", "B")


def split_params(classes=CLASSES, **changes) -> SplitParams:
    values = dict(classes=classes, per_class=None, val_fraction=0.2, test_fraction=0.2, strategy="random",
                  block_size=5, near_duplicate_similarity=0.97, seed=0)
    return SplitParams(**(values | changes))


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class MessyDataset:
    """Classes A and B with normal frames, every readable and unreadable kind of file above, file names
    with spaces and non-ASCII characters, an unknown class folder, one photo under both classes and
    symlinks leading out of the dataset."""

    def __init__(self, project):
        self.project, root = project, project.root
        normal = project.add_noise_images(CLASSES, 6)
        train = project.train
        readable = [put(train / "A" / f"A{7 + i} {name}", make()[0])
                    for i, (name, make) in enumerate(READABLE.items())]
        readable += [
            put(train / "A" / "Ñandú ✋ 20.png", encode(Image.fromarray(noise(11)), "PNG")),
            put(train / "B" / "手話 photo, copy (2).jpg", encode(Image.fromarray(noise(12)), "JPEG")),
            put(train / "B" / "huge 8000.jpg", encode(Image.new("RGB", (8000, 8000), (20, 60, 200)), "JPEG")),
        ]
        unreadable = [put(train / "B" / f"B{7 + i} {name}", data)
                      for i, (name, data) in enumerate(UNREADABLE.items())]
        unreadable.append(put(train / "B" / "ünïcode bröken.jpg", b"\xff\xd8\xff garbage"))
        same = encode(Image.fromarray(noise(13)), "PNG")
        conflicting = [put(train / label / "same photo.png", same) for label in CLASSES]
        put(train / "hello" / "H1.jpg", encode(Image.fromarray(noise(14)), "JPEG"))
        outside = put(root.parent / "outside" / "elsewhere.png", encode(Image.fromarray(noise(15)), "PNG"))
        link = train / "A" / "A30.png"
        link.symlink_to(outside)

        rel = lambda paths: {dataset._relative(p, root) for p in paths}  # noqa: E731
        self.used = rel(normal + readable)
        self.unreadable = rel(unreadable)
        self.conflicting = rel(conflicting)
        self.outside = rel([link])
        self.skipped = self.unreadable | self.conflicting | self.outside


@pytest.fixture(scope="module")
def messy(tmp_path_factory, make_stage_project):
    project = make_stage_project(tmp_path_factory.mktemp("messy") / "project")
    project.set(split={"classes": list(CLASSES), "per_class": "all", "strategy": "random"})
    return MessyDataset(project)


def manifest_paths(manifests) -> set:
    return {item.path for name in SPLITS for item in manifests[name]}


def test_make_split_uses_readable_files_and_reports_the_rest(messy):
    root = messy.project.root
    manifests, report = dataset.make_split(messy.project.raw, root, split_params())
    assert manifest_paths(manifests) == messy.used
    assert all((root / path).is_file() for path in manifest_paths(manifests))
    reasons = dict(report.skipped)
    assert set(reasons) == messy.skipped and len(report.skipped) == len(messy.skipped)
    assert all(reasons[path] for path in messy.unreadable)
    assert all("A" in reasons[path] and "B" in reasons[path] for path in messy.conflicting)
    assert all("outside" in reasons[path] for path in messy.outside)
    assert report.conflicting_labels_dropped == len(messy.conflicting)
    assert report.unknown_class_folders == ["hello"]
    metrics = dataset.split_metrics(manifests, report)
    assert metrics["skipped_files"] == len(messy.skipped)
    assert metrics["unknown_class_folders"] == 1


def read_csv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_split_stage_writes_manifests_skipped_csv_and_metrics(messy):
    project = messy.project
    result = project.run("split")
    assert result.returncode == 0, result.stderr
    split = project.root / "data" / "split"
    used = set()
    for name in SPLITS:
        paths, labels = dataset.read_manifest(split / f"{name}.csv", CLASSES)
        used |= set(paths)
        assert all(Path(path).parent.name == label for path, label in zip(paths, labels))
    assert used == messy.used
    assert all((project.root / path).is_file() for path in used)  # non-ASCII names survive the CSV
    skipped = read_csv(split / "skipped.csv")
    assert {row["path"] for row in skipped} == messy.skipped and all(row["reason"] for row in skipped)
    metrics = json.loads((project.root / "metrics" / "split.json").read_text(encoding="utf-8"))
    assert metrics["skipped_files"] == len(messy.skipped)
    assert metrics["conflicting_labels_dropped"] == len(messy.conflicting)
    assert metrics["unknown_class_folders"] == 1
    assert sum(metrics["counts"][name] for name in SPLITS) == len(messy.used)
    for path in messy.skipped:
        assert f"skipped {path}: " in result.stdout
    assert "hello" in result.stdout


# ---------------------------------------------------------------- dataset shape

def three_classes(project, missing: str):
    project.add_noise_images(("A", "B"), 5)
    folder = project.train / "C"
    if missing == "empty folder":
        folder.mkdir()
    elif missing == "only unreadable files":
        put(folder / "C1.jpg", b"")
        put(folder / "C2.jpg", b"not a photo")
    elif missing == "only hidden files":
        put(folder / ".DS_Store", b"junk")
        put(folder / "._C1.jpg", UNREADABLE["text.jpg"])


@pytest.mark.parametrize("missing", ["no folder", "empty folder", "only unreadable files", "only hidden files"])
def test_class_without_images_names_the_class_and_the_fix(stage_project, missing):
    three_classes(stage_project, missing)
    with pytest.raises(PipelineError) as caught:
        dataset.make_split(stage_project.raw, stage_project.root, split_params(("A", "B", "C")))
    message = str(caught.value)
    assert "'C'" in message and "asl_alphabet_train/C" in message and "split.classes" in message


def test_split_stage_with_an_empty_class_exits_1_with_one_line(stage_project):
    three_classes(stage_project, "empty folder")
    stage_project.set(split={"classes": ["A", "B", "C"]})
    result = stage_project.run("split")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "'C'" in result.stderr and "split.classes" in result.stderr
    assert not (stage_project.root / "data" / "split").exists()


def test_no_images_at_all_names_the_folder_and_the_fix(stage_project):
    for label in CLASSES:
        (stage_project.train / label).mkdir()
    with pytest.raises(PipelineError) as caught:
        dataset.make_split(stage_project.raw, stage_project.root, split_params())
    assert str(stage_project.train) in str(caught.value) and "data.local_dir" in str(caught.value)


def test_missing_training_folder_says_to_run_download(stage_project):
    stage_project.train.rmdir()
    with pytest.raises(PipelineError) as caught:
        dataset.make_split(stage_project.raw, stage_project.root, split_params())
    assert str(stage_project.train) in str(caught.value) and "download" in str(caught.value)


def test_split_scan_skips_symlinks_leading_outside_the_dataset(stage_project):
    """A symlinked file, sub-folder, class folder or test folder outside data/raw is skipped and reported;
    a symlink that stays inside the dataset is followed."""
    project, outside = stage_project, stage_project.root.parent / "outside"
    project.add_noise_images(("A", "B"), 5)
    put(outside / "x.png", encode(Image.fromarray(noise(20)), "PNG"))
    for i in range(3):
        put(outside / "C" / f"C{i + 1}.png", encode(Image.fromarray(noise(21 + i)), "PNG"))
        put(outside / "more" / f"A{i + 10}.png", encode(Image.fromarray(noise(24 + i)), "PNG"))
        put(project.raw / "mirror" / "B" / f"B{i + 10}.png", encode(Image.fromarray(noise(27 + i)), "PNG"))
    put(outside / "test" / "A_test.jpg", encode(Image.fromarray(noise(30)), "JPEG"))
    links = {
        project.train / "A" / "A6.png": outside / "x.png",
        project.train / "A" / "more": outside / "more",
        project.train / "C": outside / "C",
        project.raw / "asl_alphabet_test": outside / "test",
    }
    for link, target in links.items():
        link.symlink_to(target)
    (project.train / "B" / "inside").symlink_to(project.raw / "mirror" / "B")  # not searched, not reported
    (project.train / "B" / "B6.png").symlink_to(project.raw / "mirror" / "B" / "B10.png")

    with pytest.raises(PipelineError, match="'C'"):  # its only folder lies outside: C has no images
        dataset.make_split(project.raw, project.root, split_params(("A", "B", "C")))
    manifests, report = dataset.make_split(project.raw, project.root, split_params(("A", "B")))
    raw = project.raw.resolve()
    used = {item.path for items in manifests.values() for item in items}
    assert all((project.root / path).resolve().is_relative_to(raw) for path in used)
    assert "data/raw/asl_alphabet_train/B/B6.png" in used
    assert "kaggle_test" not in manifests
    outside_links = {dataset._relative(link, project.root) for link in links if link.name != "C"}
    assert {path for path, reason in report.skipped if "outside" in reason} == outside_links


# ---------------------------------------------------------------- model and array files

def save_with_siblings(network, folder: Path, classes=("A", "B", "C")) -> tuple:
    """Save as the train stage does (model.keras, labels.json, featurizers.json); (model file, labels file)."""
    from asl_pipeline.config import ModelFiles
    from asl_pipeline.model import save_model
    from helpers import make_spec

    files = ModelFiles(folder / "model.keras")
    save_model(network, list(classes), make_spec(("hand_landmarks",), features=("angles",)), files.model,
               files.labels, files.spec)
    return files.model, files.labels


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A landmarks-only model on the 15 joint angles (+ 4 hand scalars): a dict input named "hand"."""
    import keras

    folder = tmp_path_factory.mktemp("model")
    inputs = {"hand": keras.Input((16,), name="hand")}
    network = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs["hand"]))
    save_with_siblings(network, folder)
    return folder


def copy_model(saved_model: Path, folder: Path, model_bytes=None, labels_bytes=None):
    folder.mkdir(exist_ok=True)
    model_file, labels_file = folder / "model.keras", folder / "labels.json"
    model_file.write_bytes((saved_model / "model.keras").read_bytes() if model_bytes is None else model_bytes)
    labels_file.write_bytes((saved_model / "labels.json").read_bytes() if labels_bytes is None else labels_bytes)
    return model_file, labels_file


def test_the_saved_model_loads(saved_model):
    from asl_pipeline.model import input_names, load_model, load_spec

    network, classes = load_model(saved_model / "model.keras", saved_model / "labels.json")
    assert classes == ["A", "B", "C"] and network.output_shape[-1] == 3
    assert input_names(network) == ("hand",)
    assert load_spec(saved_model / "featurizers.json").hand_dim == 16


@pytest.mark.parametrize("content", [None, "{not json", '{"featurizers": ["backbone"]}', '["A"]'],
                         ids=["missing", "not json", "incomplete", "not a mapping"])
def test_feature_spec_that_is_missing_or_damaged_names_it(tmp_path, content):
    from asl_pipeline.model import load_spec

    path = tmp_path / "featurizers.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PipelineError) as caught:
        load_spec(path)
    assert str(path) in str(caught.value) and "dvc repro train" in str(caught.value)


def test_model_and_feature_spec_from_different_runs_name_both(saved_model, tmp_path):
    """The model reads a hand vector, but featurizers.json says photos go to a backbone: refuse to serve."""
    import json

    from asl_pipeline.inference import load_classifier
    from helpers import make_spec

    model_file, _ = copy_model(saved_model, tmp_path / "models")
    spec_file = model_file.with_name("featurizers.json")
    spec_file.write_text(json.dumps(make_spec(("backbone",)).to_dict()))
    with pytest.raises(PipelineError) as caught:
        load_classifier(model_file)
    message = str(caught.value)
    assert str(model_file) in message and str(spec_file) in message and "dvc repro train" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_model_file_is_a_pipeline_error_naming_it(saved_model, tmp_path, damage):
    from asl_pipeline.model import load_model

    good = (saved_model / "model.keras").read_bytes()
    data = {"garbage": np.random.default_rng(0).bytes(len(good)), "truncated": good[: len(good) // 2],
            "empty": b""}[damage]
    model_file, labels_file = copy_model(saved_model, tmp_path / "models", model_bytes=data)
    with pytest.raises(PipelineError) as caught:
        load_model(model_file, labels_file)
    assert str(model_file) in str(caught.value) and "dvc repro train" in str(caught.value)


@pytest.mark.parametrize("labels", [b"A, B, C\n", b'{"A": 0, "B": 1, "C": 2}', b'["A", "B", 3]', b"\xff\xfe\x00["])
def test_labels_file_that_is_not_a_json_list_of_names(saved_model, tmp_path, labels):
    from asl_pipeline.model import load_model

    model_file, labels_file = copy_model(saved_model, tmp_path / "models", labels_bytes=labels)
    with pytest.raises(PipelineError) as caught:
        load_model(model_file, labels_file)
    assert str(labels_file) in str(caught.value)


def test_model_with_a_lambda_layer_is_refused_not_run(tmp_path):
    """Safe mode: loading must not deserialize (and so run) Python bytecode stored in the model file."""
    import keras
    from asl_pipeline.model import load_model

    marker = tmp_path / "lambda ran"
    # eval puts the path in the lambda's code as a constant, which is what Keras stores.
    touch = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Lambda(touch)(inputs))
    model_file, labels_file = save_with_siblings(keras.Model(inputs, outputs), tmp_path)
    marker.unlink(missing_ok=True)  # building the model ran the lambda
    with pytest.raises(PipelineError) as caught:
        load_model(model_file, labels_file)
    assert str(model_file) in str(caught.value)
    assert not marker.exists()


class WritesMarker:
    """Unpickling this creates `path`: proof that a loader ran pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def feature_arrays(**changes) -> dict:
    arrays = dict(backbone=np.zeros((2, 4), np.float32), labels=np.array(["A", "B"]),
                  paths=np.array(["a.jpg", "b.jpg"]), views=np.zeros(2, np.int16))
    return arrays | changes


def test_features_with_an_object_array_are_refused_not_unpickled(tmp_path):
    from asl_pipeline import features

    marker = tmp_path / "unpickled"
    path = tmp_path / "train.npz"
    np.savez(path, **feature_arrays(paths=np.array([WritesMarker(marker), "b.jpg"], dtype=object)))
    assert not marker.exists()
    with pytest.raises(PipelineError) as caught:
        features.load_features(path)
    assert str(path) in str(caught.value) and "dvc repro featurize" in str(caught.value)
    assert not marker.exists()


def test_features_missing_an_array_are_a_pipeline_error(tmp_path):
    from asl_pipeline import features

    path = tmp_path / "train.npz"
    arrays = feature_arrays()
    del arrays["views"]
    np.savez(path, **arrays)
    with pytest.raises(PipelineError, match="dvc repro featurize"):
        features.load_features(path)


def test_truncated_features_file_is_a_pipeline_error(tmp_path):
    from asl_pipeline import features

    path = tmp_path / "train.npz"
    np.savez(path, **feature_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match="dvc repro featurize"):
        features.load_features(path)


@pytest.mark.parametrize("content", [None, "{not json"], ids=["missing", "damaged"])
def test_reading_an_earlier_stages_json_names_the_stage_to_rerun(tmp_path, content):
    from asl_pipeline import atomic

    path = tmp_path / "meta.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PipelineError, match=r"meta\.json .*dvc repro featurize"):
        atomic.read_json(path, "featurize")
