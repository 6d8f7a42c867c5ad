"""Checkpoint-compatible VQVAE and VAR supernet."""
from .var import VAR
from .vqvae import VQVAE

__all__ = ["VAR", "VQVAE"]
