"""Errors that reach the user as one clear line.

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
