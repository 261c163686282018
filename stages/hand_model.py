"""Stage hand_model: MediaPipe's hand-landmark bundle, sha256-checked, into models/ beside the classifier."""
from asl_pipeline import hand_model
from asl_pipeline.config import input_path, load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    params = load_params(paths.params).hands
    dest = paths.hand_model
    report = hand_model.fetch_bundle(params.source, input_path(paths.root, params.local_file), dest)
    print(f"hand_model: {dest} from {report['source']} ({report['bytes']} bytes, sha256 "
          f"{report['sha256'][:12]}..., {report['build']})")


if __name__ == "__main__":
    main()
