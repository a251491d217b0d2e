"""Errors that reach the user as one clear line, and :func:`first_line` for foreign ones.

Every failure a user can cause (a bad file, a bad option, a model we cannot
handle) is raised as an :class:`EqsatError` subclass; the CLI prints its message
and exits with the class's code, never a traceback.
"""


class EqsatError(Exception):
    """Base class: a failure explained to the user in one line."""

    exit_code = 1


class InputError(EqsatError):
    """The input file or option is missing, malformed or unsupported."""

    exit_code = 2


class OutputError(EqsatError):
    """The output cannot be written where asked."""

    exit_code = 3


class CheckError(EqsatError):
    """The optimized model does not compute what the original computes."""

    exit_code = 4


class RuleError(EqsatError):
    """A rule file is malformed, or a rule is wrong."""

    exit_code = 5


class ResourceLimitError(EqsatError):
    """A stage needed more memory than the limit the user set."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 200, *, typed: bool = False) -> str:
    """The first line of an exception's message, at most ``limit`` characters (the exception's
    class name when the message is empty); ``typed``: prefixed with the class name
    (``"ValueError: ..."``), for exceptions the user did not cause.

    How every one-line report of a foreign exception (onnx's checker, onnxruntime, a peer
    optimizer) is made."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else exc.__class__.__name__
    return f"{exc.__class__.__name__}: {line}" if typed else line
