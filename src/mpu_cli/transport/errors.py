"""Kept free of heavy imports so the CLIs can catch it cheaply."""


class TransportError(Exception):
    """A file received over the exchange folder is missing, malformed, altered or foreign, or a party's process
    failed. The CLIs print the one-line message and exit with code 2."""
