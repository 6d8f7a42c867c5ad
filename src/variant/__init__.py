"""variant: the reproducible pipeline of the VARiant paper."""
__version__ = "0.1.0"
