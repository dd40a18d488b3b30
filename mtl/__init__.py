"""mtl: a multi-task sentence transformer (shared encoder, classification and tagging heads) on Ray."""

__version__ = "0.1.0"
