"""Fetch the ASL alphabet dataset (local folder, local .zip or the Kaggle API) into data/raw.

Every source ends in the same layout, built inside atomic_dir so a failed or interrupted fetch keeps
the previous data/raw:
    raw_dir/asl_alphabet_train/<CLASS>/*
    raw_dir/asl_alphabet_test/*          (only if the source has a test folder)
"""
import contextlib
import io
import json
import os
import shutil
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from asl_pipeline.atomic import atomic_dir
from asl_pipeline.errors import PipelineError

TRAIN = "asl_alphabet_train"
TEST = "asl_alphabet_test"
SOURCES = ("auto", "local", "kaggle")
EXPECTED_LAYOUT = (f"{TRAIN}/<CLASS>/<images> (optionally {TEST}/<images>), or Kaggle's nested "
                   f"{TRAIN}/{TRAIN}/<CLASS>/, possibly inside one top folder")
# Kaggle's zip nests the train folder once (asl_alphabet_train/asl_alphabet_train/A) and a
# hand-made zip may add one top folder, so the train folder sits at most this deep.
MAX_LAYOUT_DEPTH = 3

CREDENTIALS_HELP = (
    "add Kaggle credentials: put kaggle.json (from https://www.kaggle.com/settings/api) in ~/.kaggle/ "
    "(or in the folder KAGGLE_CONFIG_DIR names) and chmod 600 it, or set KAGGLE_USERNAME and KAGGLE_KEY, "
    "or set KAGGLE_API_TOKEN (or save the token to ~/.kaggle/access_token), or run `kaggle auth login`")
LOCAL_HELP = (
    "use a local copy: set data.source: local and data.local_dir in params.yaml to a folder or .zip "
    f"in Kaggle layout ({TRAIN}/<CLASS>/...)")


def fetch_dataset(source: str, local_dir: Path | str | None, kaggle_dataset: str, raw_dir: Path) -> dict:
    """Fill raw_dir from `source` ('auto' | 'local' | 'kaggle') and return a report of what arrived."""
    raw_dir = Path(raw_dir)
    local = Path(local_dir) if local_dir not in (None, "") else None
    if source not in SOURCES:
        raise PipelineError(f"params.yaml: 'data.source' is {source!r}; expected one of {list(SOURCES)}")
    if source == "auto":
        if local is not None and local.exists():
            source = "local"
        elif kaggle_credentials_present():
            source = "kaggle"
        else:
            where = f"data.local_dir ({local}) does not exist" if local else "data.local_dir is empty"
            raise PipelineError(
                f"params.yaml: data.source is auto, but {where} and no Kaggle credentials were found. "
                f"Either {LOCAL_HELP}, or {CREDENTIALS_HELP}.")

    if source == "local":
        local = _check_local(local, raw_dir)
    report = {"source": source, "origin": str(local) if source == "local" else kaggle_dataset}

    with atomic_dir(raw_dir) as tmp:
        # Downloads and unpacked zips live inside tmp too, so an error cleans them up with it.
        if source == "kaggle":
            zip_path = kaggle_download(kaggle_dataset, tmp / ".download")
            found = _unpack(zip_path, tmp)
        elif local.is_dir():
            found = _copy_layout(local.resolve(), tmp, move=False, label=str(local))
        else:
            found = _unpack(local, tmp)
        shutil.rmtree(tmp / ".download", ignore_errors=True)
        shutil.rmtree(tmp / ".unzipped", ignore_errors=True)
    report.update(found)
    return report


def _check_local(local, raw_dir: Path) -> Path:
    if local is None:
        raise PipelineError("params.yaml: data.source is local but data.local_dir is empty; "
                            f"set it to a folder or .zip in Kaggle layout ({EXPECTED_LAYOUT})")
    if not local.exists():
        raise PipelineError(f"params.yaml: data.local_dir {local} does not exist; set it to a folder or .zip "
                            f"in Kaggle layout, or set data.source: kaggle")
    if local.is_file() and local.suffix.lower() != ".zip":
        raise PipelineError(f"params.yaml: data.local_dir {local} is a file but not a .zip; "
                            "expected a folder or a .zip in Kaggle layout")
    # The fetch replaces raw_dir wholesale, which would delete a source that lives inside it.
    if local.resolve().is_relative_to(raw_dir.resolve()):
        raise PipelineError(f"params.yaml: data.local_dir {local} is inside {raw_dir}, which the download "
                            "stage replaces; keep the local copy somewhere else")
    return local


def _unpack(zip_path: Path, tmp: Path) -> dict:
    staging = tmp / ".unzipped"
    safe_extract(zip_path, staging)
    # Extracted files are ours already and on the same filesystem: move them instead of copying.
    return _copy_layout(staging.resolve(), tmp, move=True, label=str(zip_path))


def safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract zip_path into dest, refusing the whole zip if any entry could write outside dest."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise PipelineError(f"{zip_path} is not a valid zip file; re-download it or point data.local_dir "
                            "at the extracted folder") from None
    with archive:
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        # Check every entry before writing anything: a refused zip must leave no partial files behind.
        for info in archive.infolist():
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            why = None
            if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or \
                    PureWindowsPath(name).drive or name.startswith(("/", "\\")):
                why = "is an absolute path"
            elif ".." in parts or not (root / name).resolve().is_relative_to(root):
                why = "points outside the extraction folder"
            elif (info.external_attr >> 16) & 0o170000 == 0o120000:
                why = "is a symlink"
            if why:
                raise PipelineError(f"{zip_path}: refusing to extract, entry {name!r} {why}; "
                                    "use an unmodified copy of the Kaggle zip")
        try:
            archive.extractall(dest)
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise PipelineError(f"{zip_path} is damaged ({error}); re-download it") from None


def is_hidden(name: str) -> bool:
    # macOS litter (.DS_Store, ._A1.jpg, __MACOSX/) is not data.
    return name.startswith(".") or name == "__MACOSX"


def visible_subdirs(folder: Path):
    # Symlinked folders are not searched: one pointing outside the source would smuggle files in.
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries
                      if not is_hidden(e.name) and e.is_dir(follow_symlinks=False))


def _class_dirs(train: Path) -> list:
    """Class folders of a candidate train folder: visible subfolders holding at least one file."""
    classes = []
    for sub in visible_subdirs(train):
        if sub.name in (TRAIN, TEST):
            continue
        with os.scandir(sub) as entries:
            if any(not is_hidden(e.name) and e.is_file() for e in entries):
                classes.append(sub)
    return classes


def _find_train(root: Path, label: str) -> Path:
    """Shallowest folder named asl_alphabet_train whose children are class folders."""
    level = [root]
    for depth in range(MAX_LAYOUT_DEPTH + 1):
        found = [d for d in level if d.name == TRAIN and _class_dirs(d)]
        if len(found) > 1:
            listed = ", ".join(str(d.relative_to(root)) for d in found)
            raise PipelineError(f"{label} holds more than one dataset ({listed}); point data.local_dir at one")
        if found:
            return found[0]
        if depth < MAX_LAYOUT_DEPTH:
            level = [sub for d in level for sub in visible_subdirs(d)]
    raise PipelineError(f"{label}: no {TRAIN} folder with class folders found; expected {EXPECTED_LAYOUT}")


def _find_test(train: Path, root: Path) -> Path | None:
    base = train.parent.parent if train.parent.name == TRAIN else train.parent
    test = base / TEST
    if (test / TEST).is_dir():
        test = test / TEST
    # Only inside the source: data.local_dir pointing at the train folder itself means "no test folder".
    return test if test.is_dir() and test.is_relative_to(root) else None


def _copy_layout(root: Path, out: Path, move: bool, label: str | None = None) -> dict:
    label = label or str(root)
    train = _find_train(root, label)
    test = _find_test(train, root)
    skipped = []
    per_class = {}
    for class_dir in _class_dirs(train):
        per_class[class_dir.name] = _transfer_tree(class_dir, out / TRAIN / class_dir.name, root, move, skipped)
    test_images = _transfer_tree(test, out / TEST, root, move, skipped) if test else 0
    return {
        "layout": str(train.relative_to(root)),
        "images_per_class": per_class,
        "total_images": sum(per_class.values()),
        "test_images": test_images,
        "skipped_symlinks": skipped,
    }


def _transfer_tree(src: Path, dst: Path, root: Path, move: bool, skipped: list, ancestors=()) -> int:
    """Copy (or move) the visible files under src to dst; returns how many files arrived."""
    dst.mkdir(parents=True, exist_ok=True)
    ancestors = ancestors + (src.resolve(),)  # a symlink to one of these would recurse forever
    count = 0
    # scandir, not a sorted listing of Path objects: a class folder holds ~3,000 files.
    with os.scandir(src) as entries:
        for entry in entries:
            if is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                reason = None
                if not target.is_relative_to(root):
                    reason = f"points outside the source ({target})"
                elif not target.exists():
                    reason = "is broken"
                elif target in ancestors:
                    reason = "loops back to a folder that contains it"
                if reason:
                    relative = str(path.relative_to(root))
                    skipped.append(relative)
                    print(f"warning: skipped symlink {relative}: it {reason}", file=sys.stderr)
                    continue
            if entry.is_dir():
                count += _transfer_tree(path, dst / entry.name, root, move, skipped, ancestors)
            elif entry.is_file():
                if move:
                    os.replace(path, dst / entry.name)
                else:
                    shutil.copy2(path, dst / entry.name)
                count += 1
    return count


# --- Kaggle -------------------------------------------------------------------------------------------

def _kaggle_config_dir() -> Path:
    # Same search as kaggle 2.2.5's KaggleApi.config_dir.
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(xdg) / "kaggle"
    return legacy


def _read_kaggle_json() -> dict:
    try:
        data = json.loads((_kaggle_config_dir() / "kaggle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _nonempty_file(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return False


def kaggle_credentials_present() -> bool:
    """Whether kaggle 2.2.5 would find credentials; checked without importing kaggle (it authenticates on import)."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN"):
        return True
    # kaggle merges kaggle.json with KAGGLE_* variables, the variables winning.
    config = _read_kaggle_json()
    username = env.get("KAGGLE_USERNAME") or config.get("username")
    key = env.get("KAGGLE_KEY") or config.get("key")
    if username and key:
        return True
    # kagglesdk looks for these under ~/.kaggle whatever KAGGLE_CONFIG_DIR says.
    home_kaggle = Path.home() / ".kaggle"
    if _nonempty_file(home_kaggle / "access_token") or _nonempty_file(home_kaggle / "access_token.txt"):
        return True
    try:
        oauth = json.loads((home_kaggle / "credentials.json").read_text(encoding="utf-8"))
        if isinstance(oauth, dict) and oauth.get("refresh_token"):
            return True
    except (OSError, ValueError):
        pass
    # Inside a Kaggle notebook the token comes from a file the platform provides.
    token_path = env.get("KAGGLE_API_V1_TOKEN")
    return bool(env.get("KAGGLE_KERNEL_RUN_TYPE") and env.get("KAGGLE_DATA_PROXY_URL")
                and token_path and _nonempty_file(Path(token_path)))


def _redact(text: str) -> str:
    """Remove credential values from text that goes into an error message."""
    secrets = [os.environ.get(name, "") for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    secrets.append(str(_read_kaggle_json().get("key", "")))
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def kaggle_download(dataset: str, dest: Path) -> Path:
    """Download Kaggle `dataset` ('owner/name') as a zip into dest and return the zip's path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    no_credentials = f"no usable Kaggle credentials to download {dataset} (data.source: kaggle). Either " \
                     f"{CREDENTIALS_HELP}; or {LOCAL_HELP}."
    captured = io.StringIO()
    try:
        # Importing kaggle authenticates once and prints the CLI's login help when that fails; the
        # explicit authenticate() then calls exit(1). Our message replaces that help.
        with contextlib.redirect_stdout(captured):
            import requests
            import urllib3.exceptions
            from kaggle.api.kaggle_api_extended import KaggleApi
            api = KaggleApi()
            api.authenticate()
    except ImportError as error:
        raise PipelineError(f"cannot import the kaggle package ({error}); install requirements.txt into the "
                            f"venv, or {LOCAL_HELP}") from None
    except SystemExit:
        raise PipelineError(no_credentials) from None
    except Exception as error:
        network = _network_error(error)
        if network:
            raise PipelineError(network.format(dataset=dataset, detail=_redact(str(error)))) from None
        if isinstance(error, (OSError, ValueError)):
            raise PipelineError(f"Kaggle credentials could not be read ({type(error).__name__}: "
                                f"{_redact(str(error))}). Either {CREDENTIALS_HELP}; or {LOCAL_HELP}.") from None
        raise
    # What remains worth seeing after a successful login, e.g. kaggle's "key is readable" warning.
    sys.stdout.write(captured.getvalue())

    try:
        # Kaggle's own bar (rate, time left) on a terminal; in a log it would print a line per update.
        api.dataset_download_files(dataset, path=str(dest), unzip=False, quiet=not sys.stdout.isatty())
    except requests.exceptions.HTTPError as error:
        status = getattr(error.response, "status_code", None)
        detail = _redact(str(error))
        if status in (401, 403):
            raise PipelineError(f"Kaggle refused the credentials for {dataset} (HTTP {status}: {detail}); "
                                f"check or regenerate them: {CREDENTIALS_HELP}; or {LOCAL_HELP}.") from None
        if status == 404:
            raise PipelineError(f"params.yaml: data.kaggle_dataset {dataset!r} was not found on Kaggle "
                                f"(HTTP 404); expected owner/dataset, e.g. grassknoted/asl-alphabet") from None
        raise PipelineError(f"Kaggle download of {dataset} failed (HTTP {status}: {detail}); retry later, or "
                            f"{LOCAL_HELP}.") from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
            ConnectionError, TimeoutError) as error:
        raise PipelineError(_network_error(error).format(dataset=dataset, detail=_redact(str(error)))) from None
    except ValueError as error:
        raise PipelineError(f"params.yaml: data.kaggle_dataset {dataset!r} is not usable "
                            f"({_redact(str(error))}); expected owner/dataset") from None

    zips = sorted(dest.glob("*.zip"))
    if not zips:
        raise PipelineError(f"the Kaggle download of {dataset} left no .zip in {dest}; retry, or {LOCAL_HELP}")
    return zips[0]


def _network_error(error: BaseException) -> str | None:
    """Message template if `error` means Kaggle could not be reached, else None."""
    import requests
    import urllib3.exceptions
    if isinstance(error, requests.exceptions.HTTPError):
        return None
    if isinstance(error, (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                          ConnectionError, TimeoutError)):
        return ("could not reach Kaggle to download {dataset} (network error: {detail}). Check the internet "
                "connection and retry, or " + LOCAL_HELP + " (download the zip from "
                "https://www.kaggle.com/datasets/{dataset} on a machine with internet).")
    return None
