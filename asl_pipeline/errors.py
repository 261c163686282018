"""The one exception type users see, and the stage entry point that turns it into a clean exit."""
import functools
import sys


class PipelineError(Exception):
    """A problem the user can fix: the message names the file or param and says how."""


def exit_on_pipeline_error(main):
    """Wrap a stage's main(): a PipelineError prints one message and exits 1, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return wrapper
