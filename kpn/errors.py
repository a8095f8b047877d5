"""The one exception type every user-facing failure is raised as."""


class KpnError(Exception):
    """A user mistake or bad input: the message is one line that names what is wrong.

    Command-line entry points print it as ``error: <message>`` and exit with status 2;
    anything else that escapes is a bug in kpn.
    """
