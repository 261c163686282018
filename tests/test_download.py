"""download.py: sources normalize to one layout, bad input fails cleanly, data/raw survives every failure."""
import contextlib
import io
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from asl_pipeline.download import fetch_dataset, kaggle_credentials_present, safe_extract
from asl_pipeline.errors import PipelineError

DATASET = "grassknoted/asl-alphabet"
SECRET = "secret123abc"
COUNTS = {"A": 3, "B": 2, "C": 1}


def jpeg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (shade, 100, 200)).save(path, "JPEG")


def make_source(root: Path, nested: bool = False, test_images: int = 2) -> Path:
    """A tiny dataset in Kaggle layout (nested: the way Kaggle's zip nests each folder twice)."""
    train = root / "asl_alphabet_train"
    test = root / "asl_alphabet_test"
    if nested:
        train, test = train / "asl_alphabet_train", test / "asl_alphabet_test"
    for name, count in COUNTS.items():
        for i in range(count):
            jpeg(train / name / f"{name}{i + 1}.jpg", shade=i * 40)
    for i in range(test_images):
        jpeg(test / f"{'ABC'[i]}_test.jpg")
    (train / "A" / ".DS_Store").write_bytes(b"junk")
    return root


def zip_tree(src: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(src).as_posix())
    return zip_path


@pytest.fixture
def raw(tmp_path) -> Path:
    """A previous data/raw with a marker file that every failure must leave in place."""
    raw_dir = tmp_path / "project" / "data" / "raw"
    (raw_dir / "asl_alphabet_train" / "Z").mkdir(parents=True)
    (raw_dir / "marker.txt").write_text("previous")
    return raw_dir


def assert_intact(raw_dir: Path) -> None:
    assert (raw_dir / "marker.txt").read_text() == "previous"
    assert (raw_dir / "asl_alphabet_train" / "Z").is_dir()
    # atomic_dir's temporary siblings are gone.
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == ["raw"]


def assert_normalized(raw_dir: Path, report: dict, test_images: int = 2) -> None:
    train = raw_dir / "asl_alphabet_train"
    assert sorted(p.name for p in train.iterdir()) == sorted(COUNTS)
    for name, count in COUNTS.items():
        assert len(list((train / name).glob("*.jpg"))) == count
    assert report["images_per_class"] == COUNTS
    assert report["test_images"] == test_images
    assert not (raw_dir / "marker.txt").exists()
    assert not list(raw_dir.rglob(".*")), "hidden files and helper folders must not reach data/raw"
    if test_images:
        assert len(list((raw_dir / "asl_alphabet_test").glob("*_test.jpg"))) == test_images
    else:
        assert not (raw_dir / "asl_alphabet_test").exists()


@pytest.fixture
def no_kaggle_credentials(tmp_path, monkeypatch):
    """An empty home and config dir, no KAGGLE_* variables, and kaggle's import-time config pointed there."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "kaggle-config"))
    (home / "kaggle-config").mkdir()
    # kaggle fixes its config path when first imported (whenever that happened in this process).
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    monkeypatch.setattr(KaggleApi, "config_dir", str(home / "kaggle-config"))
    monkeypatch.setattr(KaggleApi, "config", str(home / "kaggle-config" / "kaggle.json"))
    return home


@pytest.fixture
def fake_kaggle_credentials(no_kaggle_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    return no_kaggle_credentials


# --- local sources ------------------------------------------------------------------------------------

def test_local_directory_is_copied_into_the_normal_layout(tmp_path, raw):
    source = make_source(tmp_path / "src")
    report = fetch_dataset("local", source, DATASET, raw)
    assert_normalized(raw, report)
    assert report["source"] == "local" and report["origin"] == str(source)
    assert report["skipped_symlinks"] == []
    assert (source / "asl_alphabet_train" / "A" / "A1.jpg").is_file(), "the source must be left alone"


def test_local_directory_without_test_folder(tmp_path, raw):
    report = fetch_dataset("local", make_source(tmp_path / "src", test_images=0), DATASET, raw)
    assert_normalized(raw, report, test_images=0)


@pytest.mark.parametrize("prefix", ["", "asl-alphabet/"], ids=["at-root", "in-one-top-folder"])
def test_kaggle_nested_zip_is_normalized(tmp_path, raw, prefix):
    zip_path = zip_tree(make_source(tmp_path / "src", nested=True), tmp_path / "asl.zip", prefix)
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("__MACOSX/asl_alphabet_train/._A1.jpg", b"junk")
    report = fetch_dataset("local", zip_path, DATASET, raw)
    assert_normalized(raw, report)
    assert report["layout"] == prefix + "asl_alphabet_train/asl_alphabet_train"


def test_folder_without_the_layout_names_path_and_layout(tmp_path, raw):
    source = tmp_path / "photos"
    jpeg(source / "A" / "A1.jpg")
    with pytest.raises(PipelineError) as error:
        fetch_dataset("local", source, DATASET, raw)
    assert str(source) in str(error.value) and "asl_alphabet_train/<CLASS>" in str(error.value)
    assert_intact(raw)


def test_missing_local_dir_names_the_param(tmp_path, raw):
    with pytest.raises(PipelineError, match="data.local_dir"):
        fetch_dataset("local", tmp_path / "nowhere", DATASET, raw)
    assert_intact(raw)


def test_zip_that_is_not_a_zip_is_named(tmp_path, raw):
    fake = tmp_path / "asl.zip"
    fake.write_text("<html>login required</html>")
    with pytest.raises(PipelineError) as error:
        fetch_dataset("local", fake, DATASET, raw)
    assert str(fake) in str(error.value) and "not a valid zip" in str(error.value)
    assert_intact(raw)


def test_symlink_outside_the_source_is_skipped_and_reported(tmp_path, raw, capsys):
    source = make_source(tmp_path / "src")
    secret = tmp_path / "elsewhere" / "private.jpg"
    jpeg(secret)
    (source / "asl_alphabet_train" / "B" / "B9.jpg").symlink_to(secret)
    (source / "asl_alphabet_train" / "C" / "C9.jpg").symlink_to(source / "asl_alphabet_train" / "A" / "A1.jpg")
    report = fetch_dataset("local", source, DATASET, raw)
    assert report["skipped_symlinks"] == ["asl_alphabet_train/B/B9.jpg"]
    assert not (raw / "asl_alphabet_train" / "B" / "B9.jpg").exists()
    assert report["images_per_class"] == {"A": 3, "B": 2, "C": 2}, "a symlink inside the source is copied"
    copied = raw / "asl_alphabet_train" / "C" / "C9.jpg"
    assert copied.is_file() and not copied.is_symlink()
    assert "asl_alphabet_train/B/B9.jpg" in capsys.readouterr().err


def test_failure_mid_copy_keeps_previous_raw(tmp_path, raw, monkeypatch):
    source = make_source(tmp_path / "src")
    real_copy2, calls = shutil.copy2, []

    def failing_copy2(src, dst, **kwargs):
        calls.append(src)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return real_copy2(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copy2", failing_copy2)
    with pytest.raises(OSError, match="No space"):
        fetch_dataset("local", source, DATASET, raw)
    assert len(calls) == 3
    assert_intact(raw)


def test_interrupt_mid_copy_keeps_previous_raw(tmp_path, raw, monkeypatch):
    def interrupted(src, dst, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copy2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("local", make_source(tmp_path / "src"), DATASET, raw)
    assert_intact(raw)


# --- safe unzip ---------------------------------------------------------------------------------------

def symlink_entry(archive: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(info, target)


@pytest.mark.parametrize("entry", ["../evil.txt", "asl_alphabet_train/A/../../../evil.txt", "/tmp/evil.txt",
                                   "symlink"])
def test_unsafe_zip_is_refused_before_anything_is_written(tmp_path, raw, entry):
    zip_path = zip_tree(make_source(tmp_path / "src"), tmp_path / "asl.zip")
    with zipfile.ZipFile(zip_path, "a") as archive:
        if entry == "symlink":
            symlink_entry(archive, "asl_alphabet_train/A/link.jpg", "/etc/passwd")
        else:
            archive.writestr(entry, b"evil")
    with pytest.raises(PipelineError) as error:
        fetch_dataset("local", zip_path, DATASET, raw)
    message = str(error.value)
    assert str(zip_path) in message and "refusing" in message
    assert ("link.jpg" if entry == "symlink" else entry) in message
    assert not list(tmp_path.rglob("evil.txt"))
    assert_intact(raw)


def test_safe_extract_writes_nothing_when_refusing(tmp_path):
    zip_path = tmp_path / "bad.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("good.txt", b"fine")  # listed before the bad entry, still not extracted
        archive.writestr("../evil.txt", b"evil")
    dest = tmp_path / "out"
    with pytest.raises(PipelineError, match=r"\.\./evil\.txt"):
        safe_extract(zip_path, dest)
    assert not (dest / "good.txt").exists() and not (tmp_path / "evil.txt").exists()


# --- Kaggle -------------------------------------------------------------------------------------------

def test_credentials_detection(no_kaggle_credentials, monkeypatch):
    assert not kaggle_credentials_present()
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    assert not kaggle_credentials_present(), "a username without a key is not enough"
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    assert kaggle_credentials_present()
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    (no_kaggle_credentials / "kaggle-config" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert kaggle_credentials_present()


def test_credentials_detection_token(no_kaggle_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    assert kaggle_credentials_present()
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    (no_kaggle_credentials / ".kaggle").mkdir()
    (no_kaggle_credentials / ".kaggle" / "access_token").write_text("tok\n")
    assert kaggle_credentials_present()


def test_kaggle_without_credentials_explains_both_ways_out(no_kaggle_credentials, raw, capsys):
    with pytest.raises(PipelineError) as error:
        fetch_dataset("kaggle", None, DATASET, raw)
    message = str(error.value)
    assert "kaggle.json" in message and "KAGGLE_USERNAME" in message and "data.local_dir" in message
    assert "Authentication required" not in capsys.readouterr().out, "kaggle's own help is replaced"
    assert_intact(raw)


def fail_download(monkeypatch, error: BaseException):
    from kaggle.api.kaggle_api_extended import KaggleApi

    def download_files(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=[]):
        raise error

    monkeypatch.setattr(KaggleApi, "dataset_download_files", download_files)


def network_errors():
    import requests
    import urllib3.exceptions
    url = f"https://u:{SECRET}@api.kaggle.com/v1/datasets"
    return [requests.exceptions.ConnectionError(f"Max retries exceeded with url: {url}"),
            ConnectionError(f"[Errno 101] Network is unreachable: {url}"),
            urllib3.exceptions.NewConnectionError(None, f"Failed to establish a new connection: {url}")]


@pytest.mark.parametrize("error", network_errors(), ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_kaggle_network_down(fake_kaggle_credentials, raw, monkeypatch, error):
    fail_download(monkeypatch, error)
    with pytest.raises(PipelineError) as caught:
        fetch_dataset("kaggle", None, DATASET, raw)
    message = str(caught.value)
    assert "network" in message and "data.local_dir" in message and "data.source: local" in message
    assert SECRET not in message
    assert_intact(raw)


def test_kaggle_rejected_credentials(fake_kaggle_credentials, raw, monkeypatch):
    import requests
    response = requests.Response()
    response.status_code = 401
    fail_download(monkeypatch, requests.exceptions.HTTPError(f"401 Unauthorized key={SECRET}", response=response))
    with pytest.raises(PipelineError) as caught:
        fetch_dataset("kaggle", None, DATASET, raw)
    message = str(caught.value)
    assert "refused the credentials" in message and "kaggle.json" in message and SECRET not in message
    assert_intact(raw)


def test_kaggle_download_is_unpacked_and_the_zip_removed(fake_kaggle_credentials, tmp_path, raw, monkeypatch):
    from kaggle.api.kaggle_api_extended import KaggleApi
    source = make_source(tmp_path / "src", nested=True)
    seen = {}

    def download_files(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=[]):
        seen.update(dataset=dataset, unzip=unzip)
        zip_tree(source, Path(path) / "asl-alphabet.zip")

    monkeypatch.setattr(KaggleApi, "dataset_download_files", download_files)
    report = fetch_dataset("kaggle", None, DATASET, raw)
    assert seen == {"dataset": DATASET, "unzip": False}
    assert report["source"] == "kaggle" and report["origin"] == DATASET
    assert_normalized(raw, report)
    assert not list(raw.rglob("*.zip"))


# --- auto ---------------------------------------------------------------------------------------------

def test_auto_prefers_an_existing_local_copy(fake_kaggle_credentials, tmp_path, raw, monkeypatch):
    fail_download(monkeypatch, AssertionError("auto must not download when a local copy exists"))
    report = fetch_dataset("auto", make_source(tmp_path / "src"), DATASET, raw)
    assert report["source"] == "local"
    assert_normalized(raw, report)


def test_auto_without_local_copy_or_credentials(no_kaggle_credentials, tmp_path, raw):
    with pytest.raises(PipelineError) as error:
        fetch_dataset("auto", tmp_path / "nowhere", DATASET, raw)
    message = str(error.value)
    assert "kaggle.json" in message and "KAGGLE_USERNAME" in message and "data.local_dir" in message
    assert str(tmp_path / "nowhere") in message
    assert_intact(raw)


def test_auto_uses_kaggle_when_no_local_copy(fake_kaggle_credentials, tmp_path, raw, monkeypatch):
    fail_download(monkeypatch, ConnectionError("offline"))
    with pytest.raises(PipelineError, match="could not reach Kaggle"):
        fetch_dataset("auto", tmp_path / "nowhere", DATASET, raw)
    assert_intact(raw)


def test_unknown_source_names_the_param(tmp_path, raw):
    with pytest.raises(PipelineError, match="data.source"):
        fetch_dataset("s3", None, DATASET, raw)
    assert_intact(raw)


def test_module_does_not_import_kaggle_at_import_time():
    # Importing kaggle authenticates and prints login help; a local-only run must not pay for that.
    code = "import sys, asl_pipeline.download; assert 'kaggle' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
