"""data.extra_train: more signers' photos gathered into data/extra/<entry>, training split only, never a scored
photo; and inputs outside the project found from DVC's experiment copies."""
import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asl_pipeline import config, dataset, extra
from asl_pipeline.errors import PipelineError



def photo_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_photos(folder: Path, per_class: dict, seed: int = 0) -> None:
    for label, count in per_class.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            (folder / label / f"{label}{index}.png").write_bytes(photo_bytes(seed + 100 * ord(label[0]) + index))


def gathered(tmp_path, name, source) -> list:
    extra.gather(name, source, tmp_path, tmp_path / "data" / "extra" / name)
    return extra.read_manifest(tmp_path / "data" / "extra" / name / extra.MANIFEST)


def test_a_folder_is_gathered_with_its_entry_name_as_origin_and_hashes(tmp_path):
    write_photos(tmp_path / "my-hand", {"A": 2, "B": 1})
    (tmp_path / "my-hand" / "README.md").write_text("notes are not photos")
    rows = gathered(tmp_path, "mine", "my-hand")
    assert [(r["label"], r["origin"], r["source_file"]) for r in rows] == [
        ("A", "mine", "A/A0.png"), ("A", "mine", "A/A1.png"), ("B", "mine", "B/B0.png")]
    for row in rows:  # copies inside the project, paths from its root
        assert (tmp_path / row["path"]).read_bytes() == (tmp_path / "my-hand" / row["source_file"]).read_bytes()
        assert row["path"].startswith("data/extra/mine/")


def test_a_zip_with_a_top_folder_and_an_empty_folder(tmp_path):
    with zipfile.ZipFile(tmp_path / "signer.zip", "w") as archive:
        archive.writestr("signer/C/c1.png", photo_bytes(1))
        archive.writestr("signer/nothing/n1.png", photo_bytes(2))
    (tmp_path / "empty").mkdir()
    assert [row["source_file"] for row in gathered(tmp_path, "zipped", "signer.zip")] == [
        "signer/C/c1.png", "signer/nothing/n1.png"]
    assert not (tmp_path / "data" / "extra" / "zipped" / ".unpacked").exists()
    assert gathered(tmp_path, "empty", "empty") == []


def test_only_the_entries_params_list_now_are_read(tmp_path):
    write_photos(tmp_path / "one", {"A": 1})
    write_photos(tmp_path / "two", {"B": 2}, seed=300)
    gathered(tmp_path, "one", "one")
    gathered(tmp_path, "two", "two")
    data = config.DataParams("local", "x", "a/b", extra_train={"two": "two"})
    assert [row["origin"] for row in extra.read_manifests(tmp_path / "data" / "extra", data)] == ["two", "two"]


@pytest.mark.parametrize("layout, message", [
    ({"A": 1, "holiday": 1}, r"folders \['holiday'\] beside its class folders"),
])
def test_folders_that_are_not_classes_are_refused_by_name(tmp_path, layout, message):
    write_photos(tmp_path / "mixed", layout)
    with pytest.raises(PipelineError, match=message):
        gathered(tmp_path, "mixed", "mixed")


def test_missing_source_and_loose_photos_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="absent does not exist.*remove the entry from data.extra_train"):
        gathered(tmp_path, "absent", "absent")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "x.jpg").write_bytes(photo_bytes(0))
    with pytest.raises(PipelineError, match="no class folders"):
        gathered(tmp_path, "loose", "loose")
    assert not (tmp_path / "data" / "extra" / "loose").exists()  # a failed gather writes nothing


def test_extra_photos_join_train_only_and_a_scored_photo_is_refused_by_name(tmp_path):
    raw = tmp_path / "data" / "raw" / "asl_alphabet_train"
    write_photos(raw, {"A": 6, "B": 6})
    write_photos(tmp_path / "my-hand", {"A": 1, "B": 1}, seed=5000)
    rows = gathered(tmp_path, "my-hand", "my-hand")
    params = config.SplitParams(classes=("A", "B"), per_class=None, val_fraction=0.2, test_fraction=0.2,
                                strategy="random", block_size=100, near_duplicate_similarity=0.97, seed=0)
    manifests, _ = dataset.make_split(tmp_path / "data" / "raw", tmp_path, params, rows)
    origins = {name: {item.origin for item in items} for name, items in manifests.items()}
    assert origins["train"] == {"dataset", "my-hand"}
    assert origins["val"] == origins["test"] == {"dataset"}
    assert "origin" in dataset.manifest_csv(manifests["train"]).splitlines()[0]
    # A class split.extra_exclude names: its extra photos stay out, counted; the dataset's stay in.
    without_b, report = dataset.make_split(tmp_path / "data" / "raw", tmp_path,
                                           dataclasses.replace(params, extra_exclude=("B",)), rows)
    assert [(i.label, i.origin) for i in without_b["train"] if i.origin != "dataset"] == [("A", "my-hand")]
    assert "B" in {i.label for i in without_b["train"]} and report.extra_excluded == 1
    # A dev-set photo copied into my-hand: refused, naming the file, its source and the scored photo.
    dev = tmp_path / "dev"
    write_photos(dev, {"A": 1}, seed=5000)
    with pytest.raises(PipelineError, match=r"A/A0.png of entry 'my-hand' has the same bytes as A/A0.png \(in .*dev\)"):
        dataset.make_split(tmp_path / "data" / "raw", tmp_path, params, rows, dataset.folder_hashes([dev]))
    # ... and a photo of the test split too.
    test_photo = manifests["test"][0]
    (tmp_path / "my-hand" / test_photo.label / "copy.png").write_bytes((tmp_path / test_photo.path).read_bytes())
    with pytest.raises(PipelineError, match=f"same bytes as {test_photo.path} \\(test split\\)"):
        dataset.make_split(tmp_path / "data" / "raw", tmp_path, params, gathered(tmp_path, "my-hand", "my-hand"))


def test_inputs_resolve_against_the_real_project_from_an_experiment_copy(tmp_path):
    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "tmpab12"
    assert config.input_root(copy) == project
    assert config.input_path(copy, "../shared/data/x") == project / "../shared/data/x"
    assert config.input_path(project, "data/my-hand") == project / "data/my-hand"
    assert config.input_path(copy, "/abs/path") == Path("/abs/path")


def test_kaggle_datasets_are_downloaded_by_name_into_data_extra_kaggle(tmp_path, monkeypatch):
    def fake_download(dataset, folder):  # what the Kaggle API hands back: the dataset's zip
        folder.mkdir(parents=True)
        with zipfile.ZipFile(folder / "archive.zip", "w") as archive:
            archive.writestr(f"{dataset.split('/')[1]}/B/b1.png", photo_bytes(7))
        return folder / "archive.zip"

    monkeypatch.setattr(extra.download, "kaggle_download", fake_download)
    dest = tmp_path / "data" / "extra" / config.EXTRA_KAGGLE_NAME
    assert extra.gather_kaggle(["owner/first", "owner/second"], tmp_path, dest) == {
        "kaggle:owner/first": 1, "kaggle:owner/second": 1}
    rows = extra.read_manifests(tmp_path / "data" / "extra",
                                config.DataParams("local", "x", "a/b", extra_kaggle=("owner/first", "owner/second")))
    assert [(r["origin"], r["path"], r["source_file"]) for r in rows] == [
        ("kaggle:owner/first", "data/extra/kaggle/0/B/b1.png", "first/B/b1.png"),
        ("kaggle:owner/second", "data/extra/kaggle/1/B/b1.png", "second/B/b1.png")]
    assert all((tmp_path / r["path"]).is_file() for r in rows) and not (dest / ".unpacked").exists()
