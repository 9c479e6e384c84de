"""The client: unlearning algorithms behind one registry (unlearn/algorithms.py), and the loop that runs one on a
published copy. This package's own import is light: its settings type (unlearn/settings.py) is part of the config
schema."""
