"""The one exception type users see, and the entry point wrapper that turns it into a clean exit."""
import functools
import signal
import sys


class PipelineError(Exception):
    """A problem the user can fix: the message names the file or param and says how."""


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds like an exception, so atomic writes in progress remove their temporaries.
    sys.exit(128 + signum)


def exit_on_pipeline_error(main):
    """Wrap an entry point: a PipelineError prints one message and exits 1, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            return main(*args, **kwargs)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return wrapper
