"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a missing file, malformed JSON, an unknown key...

    The message must fit on one line and name what is wrong; the CLI prints it as
    ``error: <message>`` on stderr and exits with code 2, never with a traceback.
    """
