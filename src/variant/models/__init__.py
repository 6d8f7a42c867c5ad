"""Checkpoint-compatible VQVAE and VAR supernet."""
from variant.models.var import VAR
from variant.models.vqvae import VQVAE

__all__ = ["VAR", "VQVAE"]
