"""Command line: `python -m asl_pipeline predict PATH [PATH ...]` classifies photos with the trained model;
`spell VIDEO` spells the letters signed in a video; `serve` opens the demo page; `drop-absent` fits params.yaml
to a clone without ../shared; `link-outside` lets queued experiments find ../shared."""
import argparse
import json
import sys
from pathlib import Path

from asl_pipeline import images
from asl_pipeline.atomic import write_json, write_text
from asl_pipeline.config import MY_HAND_DIR, load_params, project_paths
from asl_pipeline.errors import PipelineError

EXIT_NO_IMAGES = 2  # like a usage error: nothing was given to work on


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


DROP_ABSENT_DESCRIPTION = (
    "Remove from params.yaml every data.extra_train entry and evaluate.extra_sets folder that lies outside the "
    "repository and does not exist here (a clone without ../shared), keeping its comments, and print each; "
    "`make pipeline` runs it before `dvc repro`. A folder inside the repository is never removed: an absent one "
    "there stays DVC's error. Run from the project root.")
LINK_OUTSIDE_DESCRIPTION = (
    "Let queued and temporary experiments (`dvc exp run --queue`, `--temp`), which run in DVC's copy of the project "
    "under .dvc/tmp/exps/, find the data.extra_train folders given relative to the project and outside it "
    "(../shared/...): links them from there, and prints each link. `make pipeline` runs it before `dvc repro`. "
    "Run from the project root.")
SERVED_MODEL_DEFAULT = ("(default: the variant that params.yaml's serve.model names, "
                        "models/<serve.model>/model.keras: models/reader/model.keras as shipped)")


def served_model_file(root: Path) -> Path:
    """The model file of the variant params.yaml's serve.model names, in the project at `root`."""
    if not (root / "params.yaml").is_file():
        raise PipelineError(f"no --model given and no params.yaml in {root.resolve()} to read serve.model from: "
                            "run from the project root, or pass --model PATH/model.keras")
    return project_paths(root).variant(load_params(root / "params.yaml").served).model_files.model


def model_file(args) -> Path:
    """--model, or the served variant's model; looked up when a command needs it, after its own input checks."""
    return args.model if args.model is not None else served_model_file(Path.cwd())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asl_pipeline",
                                     description="ASL alphabet classifier: hand landmarks and ResNet50 "
                                                 "transfer learning.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict", help="classify images, draw Grad-CAM heatmaps and hand skeletons",
        description="Print the predicted sign of each image with its top-k classes; write "
                    "OUT/<stem>_prediction.txt and, unless --no-heatmap, OUT/<stem>_heatmap.png (Grad-CAM of "
                    "the predicted class over the original image, for models with a backbone) and "
                    "OUT/<stem>_hand.png (the hand skeleton the model saw, for models that use hand "
                    "landmarks) and, for a model reading hand landmarks alone, OUT/<stem>_keypoints.png (the "
                    "skeleton with each joint coloured by its weight in the decision: which fingers decided "
                    "the letter). Exit status: 0 all images classified, "
                    f"1 an image was unreadable or the model could not be loaded, {EXIT_NO_IMAGES} no images "
                    "found.")
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                         help="an image, or a folder searched recursively for files ending in "
                              f"{', '.join(sorted(images.IMAGE_SUFFIXES))} (any case)")
    predict.add_argument("--model", type=Path, help="the trained model; labels.json, featurizers.json and "
                         "hand_landmarker.task are read from the same folder " + SERVED_MODEL_DEFAULT)
    predict.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                         help="how many of the most probable classes to report (default: %(default)s)")
    predict.add_argument("--out", type=Path, default=Path("predictions"),
                         help="folder for the output files (default: %(default)s/)")
    predict.add_argument("--json", action="store_true",
                         help="also write OUT/predictions.json: a list of "
                              "{path, label, probability, top_k: [{label, probability}], hand_found}")
    predict.add_argument("--no-heatmap", action="store_true",
                         help="skip the explanations (faster): write no _heatmap.png, _keypoints.png or "
                              "_hand.png files")
    predict.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                         help="images per forward pass (default: %(default)s)")
    predict.set_defaults(run=predict_command)
    add_spell_parser(commands)
    commands.add_parser("drop-absent", help="remove from params.yaml the folders outside the repository this "
                        "clone lacks", description=DROP_ABSENT_DESCRIPTION).set_defaults(run=drop_absent_command)
    commands.add_parser("link-outside", help="let queued experiments find the folders outside the repository",
                        description=LINK_OUTSIDE_DESCRIPTION).set_defaults(run=link_outside_command)
    serve = commands.add_parser(
        "serve", help="try the model in a browser: a local page for photos, webcam snapshots and live spelling",
        description="Load the model once and serve a web page (Streamlit) that classifies a dropped or "
                    "picked photo or a webcam snapshot: the sign, the top classes, the Grad-CAM heatmap and "
                    "the hand skeleton. Its teach mode saves photos of your hand per letter for the next "
                    "`dvc repro`, and the page serves the retrained model as soon as it is written. Its Spell "
                    "live mode reads the webcam continuously and spells the letters signed; its frames go to "
                    "a second port on the same --host (--live-port), which only the page itself may use. Needs the "
                    "packages in requirements-demo.txt (`make demo` installs them). Ctrl-C stops it.")
    serve.add_argument("--model", type=Path, help="the trained model; labels.json, featurizers.json, "
                       "hand_landmarker.task and run.json are read from the same folder " + SERVED_MODEL_DEFAULT)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; the default lets in only this machine, 0.0.0.0 opens "
                            "the page to the whole network (default: %(default)s)")
    serve.add_argument("--port", type=_positive_int, default=8501,
                       help="port to listen on (default: %(default)s)")
    serve.add_argument("--live-port", type=_positive_int, metavar="PORT",
                       help="port of Spell live's frame endpoint, on --host; fixed so that an open live tab finds "
                            "it again after a restart (default: --port + 1)")
    serve.add_argument("--teach-dir", type=Path, default=MY_HAND_DIR, metavar="DIR",
                       help="where teach mode saves photos, as DIR/<LETTER>/teach_*.jpg, relative to the working "
                            "directory; training reads it when it is listed in the data.extra_train param, "
                            "which holds data/my-hand by default (default: %(default)s)")
    serve.set_defaults(run=serve_command)
    return parser


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not > 0")
    return value


def _share(low: float, low_included: bool):
    def share(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low <= value <= 1 if low_included else low < value <= 1):
            raise argparse.ArgumentTypeError(f"{value} is not in {'[' if low_included else '('}{low}, 1]")
        return value
    return share


def add_spell_parser(commands) -> None:
    from asl_pipeline import speller  # plain Python: its defaults are the documented ones

    spell = commands.add_parser(
        "spell", help="spell words from a video or a webcam: letters held steadily become text",
        description="Read each frame of a video (or a camera) with the trained model and print the text "
                    "spelled: a letter counts when the same one is read in most of the last frames; holding it "
                    "longer does not repeat it; drop the hand (or sign `nothing`) between double letters. "
                    "`space` adds a space, `del` removes the last character. J and Z are read from the hand's "
                    "motion over the last second, where the model reads no letter held (a held letter's hand "
                    "drifting is that letter). The hand is tracked from frame to frame; the palm detector runs "
                    "when the track is lost. Ctrl-C stops a camera and prints what was spelled. Exit status: 0 "
                    "spelled, "
                    "1 the video, camera or model could not be opened, or the video ended before its last frame "
                    "(what was spelled up to there is printed).")
    source = spell.add_mutually_exclusive_group(required=True)
    source.add_argument("video", nargs="?", type=Path, metavar="VIDEO", help="a video file (MP4, AVI, ...)")
    source.add_argument("--camera", type=int, metavar="N", help="read camera N instead (0: the first)")
    spell.add_argument("--model", type=Path,
                       help="the trained model, with its companions in the same folder " + SERVED_MODEL_DEFAULT)
    spell.add_argument("--fps", type=_fps, default=10.0,
                       help="frames read per second of video, at most; the window counts these frames "
                            "(default: %(default)s)")
    spell.add_argument("--window", type=_positive_int, default=speller.WINDOW, metavar="FRAMES",
                       help="how many of the last frames a letter must fill to be held (default: %(default)s)")
    spell.add_argument("--min-share", type=_share(0.5, False), default=speller.MIN_SHARE, metavar="SHARE",
                       help="the share of the window that one letter must fill, over 0.5 (default: %(default)s)")
    spell.add_argument("--min-probability", type=_share(0.0, True), default=speller.MIN_PROBABILITY, metavar="P",
                       help="frames read with a lower top probability count for no letter (default: %(default)s)")
    spell.add_argument("--no-tracking", action="store_true",
                       help="find the hand in every frame from scratch, as in a photo, instead of from the last "
                            "frame's hand (slower; to compare)")
    spell.add_argument("--json", action="store_true",
                       help="print JSON instead of the text: {source, text, frames, fps, letters: [{label, frame, "
                            "seconds, text}]}, one entry per letter, space or del taken")
    spell.add_argument("--out", type=Path, metavar="VIDEO_OUT",
                       help="also write the frames read, annotated with the hand skeleton, the current reading "
                            "and the text, to this .mp4 or .avi")
    spell.set_defaults(run=spell_command)


def find_images(paths) -> tuple[list[Path], list[str]]:
    """(image files in order, without repeats; a message per path that does not exist).

    Folders are searched recursively and sorted; a file named explicitly is taken whatever its suffix.
    """
    found, problems = [], []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in images.IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return list(dict.fromkeys(found)), problems


def prediction_text(ranked, hand_found: bool | None) -> str:
    label, probability = ranked[0]
    lines = [f"prediction: {label}", f"probability: {probability:.4f}"]
    if hand_found is not None:
        lines.append(f"hand_found: {'yes' if hand_found else 'no'}")
    lines.append(f"top-{len(ranked)}:")
    return "\n".join(lines + [f"  {name} {p:.4f}" for name, p in ranked]) + "\n"


def predict_command(args) -> int:
    files, problems = find_images(args.paths)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        print(f"error: no images found in {', '.join(map(str, args.paths))} (looked for files ending in "
              f"{', '.join(sorted(images.IMAGE_SUFFIXES))})", file=sys.stderr)
        return EXIT_NO_IMAGES
    if args.out.exists() and not args.out.is_dir():
        raise PipelineError(f"--out {args.out} is a file, not a folder")

    # Imported here, not at the top: Keras takes seconds to load, which --help and path errors need not wait.
    from asl_pipeline import drawing, inference, progress
    from asl_pipeline.evaluation import top_k
    from asl_pipeline.explain import unique_names

    classifier = inference.load_classifier(model_file(args))
    classes, uses_hands = classifier.classes, classifier.spec.uses_hands
    names = unique_names([path.stem for path in files])
    results = progress.bar(len(files), "predict", iterable=inference.analyse_images(
        classifier, files, batch_size=args.batch_size, with_heatmaps=not args.no_heatmap))
    records, failed = [], bool(problems)
    for name, result in zip(names, results):
        if result.error is not None:
            results.write(f"error: {result.error}", file=sys.stderr)
            failed = True
            continue
        ranked = top_k(result.probabilities[None], classes, args.top_k)[0]
        label, probability = ranked[0]
        listing = ", ".join(f"{c} {p:.2f}" for c, p in ranked)
        hand_note = "" if result.hand_found is None else ("" if result.hand_found else "  (no hand found)")
        # Through the bar, which redraws below the line on a terminal.
        results.write(f"{result.path}: {label} ({probability:.2f})  [top-{len(ranked)}: {listing}]{hand_note}",
                      file=sys.stdout)
        write_text(args.out / f"{name}_prediction.txt", prediction_text(ranked, result.hand_found))
        if result.heatmap is not None:
            drawing.save_png(args.out / f"{name}_heatmap.png",
                             drawing.overlay(result.image, result.heatmap, drawing.HEATMAP_ALPHA))
        if result.keypoint_weights is not None:
            drawing.save_png(args.out / f"{name}_keypoints.png",
                             drawing.draw_hand_weights(result.image, result.hand, result.keypoint_weights))
        if uses_hands and not args.no_heatmap:
            drawing.save_png(args.out / f"{name}_hand.png", drawing.draw_hand(result.image, result.hand))
        records.append({"path": str(result.path), "label": label, "probability": probability,
                        "top_k": [{"label": c, "probability": p} for c, p in ranked],
                        "hand_found": result.hand_found})
    if args.json:
        write_json(args.out / "predictions.json", records)
    return 1 if failed else 0


def spell_command(args) -> int:
    # Imported here, not at the top: Keras takes seconds to load, which --help need not wait for.
    from asl_pipeline import inference, video
    from asl_pipeline.speller import Speller
    from asl_pipeline.stream import StreamReader

    name = str(args.video) if args.camera is None else f"camera {args.camera}"
    live = args.camera is not None
    capture = video.open_source(args.video, args.camera)  # before the model: a wrong path fails at once
    try:
        classifier = inference.load_classifier(model_file(args))
        speller = Speller(args.window, args.min_share, args.min_probability)
        reader = StreamReader(speller, tracking=not args.no_tracking)

        def show(committed):  # as it happens: the feedback someone signing at a camera needs
            print(f"{committed.seconds:7.2f} s  {committed.label:<5}  {committed.text}", file=sys.stderr, flush=True)

        frames = video.spell(classifier, capture, reader, args.fps, live, args.out, show)
        unread = 0 if live else video.unread_frames(capture)
        read_rate = video.read_rate(capture, args.fps)
    finally:
        capture.release()
    if frames == 0:
        fix = ("check that no other program is using it" if live
               else f"check that it plays, or convert it: `ffmpeg -i {name} converted.mp4`")
        raise PipelineError(f"{name}: no frame could be read from it; {fix}")
    if unread:
        print(f"error: {name} stopped {unread} frames before its end: the rest is missing or damaged; "
              "the text below is what was spelled up to there", file=sys.stderr)
    if args.json:
        letters = [{"label": c.label, "frame": c.frame, "seconds": round(c.seconds, 3), "text": c.text}
                   for c in speller.committed]
        print(json.dumps({"source": name, "text": speller.text, "frames": frames, "fps": read_rate,
                          "letters": letters}, indent=2))
    else:
        print(speller.text)
    return 1 if unread else 0


def drop_absent_command(args) -> int:
    from asl_pipeline import outside_inputs

    for param, folder in outside_inputs.drop_absent(project_paths().root):
        print(f"params.yaml: {param} {folder} is not on this machine (outside the repository): removed, so "
              "this clone runs without it; `git diff params.yaml` shows it (docs/data.md, \"A clone without "
              "../shared\")")
    return 0


def link_outside_command(args) -> int:
    from asl_pipeline import outside_inputs

    for link, target in outside_inputs.link_outside(project_paths().root):
        print(f"experiment copies find {target} through {link}")
    return 0


def serve_command(args) -> int:
    # Imported here: the page loads Keras and Streamlit, which --help need not wait for.
    from asl_pipeline import serve

    serve.serve(model_file(args), args.host, args.port, args.teach_dir, args.live_port)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
