"""The hand_model stage: MediaPipe's bundle from a local copy or Google's download, accepted only when its
sha256 is pinned. No network here: urllib is patched to fail or to hand back known bytes."""
import io
import urllib.error
import urllib.request

import pytest

from asl_pipeline import hand_model
from asl_pipeline.errors import PipelineError
from helpers import HAND_BUNDLE, needs_bundle


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def serve_bytes(monkeypatch, data: bytes) -> list:
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(data)  # a context manager with read(), like an HTTP response

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_a_bundle_with_another_sha256_is_refused_naming_the_file(tmp_path, no_network):
    wrong = tmp_path / "elsewhere" / "hand_landmarker.task"
    wrong.parent.mkdir()
    wrong.write_bytes(b"PK\x03\x04 some other model")
    dest = tmp_path / "models" / "hand_landmarker.task"
    for source in ("local", "auto"):
        with pytest.raises(PipelineError) as caught:
            hand_model.fetch_bundle(source, wrong, dest)
        message = str(caught.value)
        assert str(wrong) in message and hand_model.sha256_of(wrong.read_bytes()) in message
        assert "not a pinned" in message
    assert not dest.exists() and (not dest.parent.exists() or not any(dest.parent.iterdir()))
    assert no_network == []  # auto used the local file, bad as it is, rather than downloading
    with pytest.raises(PipelineError, match=str(wrong)):
        hand_model.verified_bundle(wrong)


def test_auto_without_a_local_file_or_network_names_both_ways(tmp_path, no_network, capsys):
    absent = tmp_path / "nowhere" / "hand_landmarker.task"
    dest = tmp_path / "models" / "hand_landmarker.task"
    with pytest.raises(PipelineError) as caught:
        hand_model.fetch_bundle("auto", absent, dest)
    message = str(caught.value)
    assert no_network == [hand_model.DOWNLOAD_URL]
    assert "hands.local_file" in message and hand_model.DOWNLOAD_URL in message  # both ways out
    assert "name resolution" in message  # and why the download failed
    assert "\n" not in message
    assert not dest.exists()
    assert str(absent) in capsys.readouterr().out  # auto says it found no local copy before downloading


def test_local_source_with_a_missing_file_names_it(tmp_path, no_network):
    absent = tmp_path / "hand_landmarker.task"
    with pytest.raises(PipelineError) as caught:
        hand_model.fetch_bundle("local", absent, tmp_path / "models" / "hand_landmarker.task")
    assert str(absent) in str(caught.value) and "hands.local_file" in str(caught.value)
    assert no_network == []  # local never downloads


def test_verified_bundle_of_a_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(PipelineError) as caught:
        hand_model.verified_bundle(tmp_path / "hand_landmarker.task")
    assert str(tmp_path / "hand_landmarker.task") in str(caught.value) and "hand_model" in str(caught.value)


@needs_bundle
@pytest.mark.parametrize("source", ["local", "auto"])
def test_a_pinned_local_bundle_is_copied(tmp_path, no_network, source):
    dest = tmp_path / "models" / "hand_landmarker.task"
    report = hand_model.fetch_bundle(source, HAND_BUNDLE, dest)
    data = HAND_BUNDLE.read_bytes()
    assert dest.read_bytes() == data
    assert report == {"source": "local", "sha256": hand_model.sha256_of(data),
                      "build": hand_model.PINNED_SHA256[hand_model.sha256_of(data)], "bytes": len(data)}
    assert report["sha256"] in hand_model.PINNED_SHA256
    assert hand_model.verified_bundle(dest) == data
    assert no_network == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["hand_landmarker.task"]  # no temporaries


@needs_bundle
def test_download_of_the_pinned_bytes_succeeds(tmp_path, monkeypatch):
    data = HAND_BUNDLE.read_bytes()
    calls = serve_bytes(monkeypatch, data)
    dest = tmp_path / "models" / "hand_landmarker.task"
    report = hand_model.fetch_bundle("download", HAND_BUNDLE, dest)  # download ignores the local copy
    assert calls == [hand_model.DOWNLOAD_URL]
    assert report["source"] == "download" and report["bytes"] == len(data)
    assert dest.read_bytes() == data


def test_download_of_other_bytes_fails_and_keeps_the_previous_bundle(tmp_path, monkeypatch):
    calls = serve_bytes(monkeypatch, b"<html>captive portal</html>")
    dest = tmp_path / "models" / "hand_landmarker.task"
    dest.parent.mkdir()
    dest.write_bytes(b"previous bundle")
    with pytest.raises(PipelineError) as caught:
        hand_model.fetch_bundle("download", tmp_path / "unused.task", dest)
    assert calls == [hand_model.DOWNLOAD_URL]
    assert hand_model.DOWNLOAD_URL in str(caught.value) and "sha256" in str(caught.value)
    assert dest.read_bytes() == b"previous bundle"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["hand_landmarker.task"]


@needs_bundle
def test_hand_model_stage_copies_the_bundle_into_models(stage_project):
    """The stage as `dvc repro hand_model` runs it; the project's params point at the shared bundle."""
    result = stage_project.run("hand_model")
    assert result.returncode == 0, result.stderr
    assert (stage_project.root / "models" / "hand_landmarker.task").read_bytes() == HAND_BUNDLE.read_bytes()
    assert "hand_model:" in result.stdout and "local" in result.stdout


def test_hand_model_stage_with_a_wrong_file_exits_1_with_one_line(stage_project):
    wrong = stage_project.root / "other.task"
    wrong.write_bytes(b"not the bundle")
    stage_project.set(hands={"source": "local", "local_file": "other.task"})
    previous = stage_project.root / "models" / "hand_landmarker.task"
    previous.parent.mkdir()
    previous.write_bytes(b"previous bundle")
    result = stage_project.run("hand_model")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "other.task" in result.stderr and "sha256" in result.stderr
    assert previous.read_bytes() == b"previous bundle"
