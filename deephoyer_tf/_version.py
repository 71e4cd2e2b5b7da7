"""The version number of deephoyer_tf, in one place (setup.py reads it from here)."""

__version__ = "0.2.0"
