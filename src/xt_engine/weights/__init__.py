"""Weights: napari-xt checkpoints (safetensors + config), model loading by name or file, and
the import of released xT checkpoints."""
