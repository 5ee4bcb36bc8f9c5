"""The one exception type that means "the user gave bad input".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """Bad input the user can fix: the message says what is wrong and what to do."""


def one_line(exc: BaseException) -> str:
    """A library's failure as one line for an :class:`InputError` message.

    An OSError gives its reason without the (temp) file name; other messages their last
    non-empty line, where SimpleITK puts the useful part (without its ``sitk::ERROR:`` tag).
    """
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].removeprefix("sitk::ERROR: ") if lines else type(exc).__name__
