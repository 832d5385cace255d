"""Resolve what a user names as "the model": a registered variant or a checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from xt_engine.errors import CheckpointError, ConfigError
from xt_engine.models import XTModel, create_model, list_models, model_config
from xt_engine.models.region_encoder import read_state_dict
from xt_engine.weights.checkpoint import load_checkpoint

ASSETS = Path(__file__).parent / "assets"


def bundled_checkpoint(name: str) -> Path | None:
    """The trained weights shipped inside the package for a registered variant, if any."""
    path = ASSETS / f"{name}.safetensors"
    return path if path.is_file() else None


@dataclass(frozen=True)
class WeightsRecord:
    """Whether trained weights exist for a registered variant, and where they come from."""

    trained: bool
    source: str


def weights_record(name: str) -> WeightsRecord:
    """The weights behind a registered name: the bundled checkpoint if the package ships one
    (its recorded training, e.g. ``xt train --recipe demo-sar``), else none (an architecture
    only: random weights, for training starts)."""
    bundled = bundled_checkpoint(name)
    if bundled is None:
        return WeightsRecord(False, "none: an architecture only (random weights)")
    from xt_engine.weights.checkpoint import read_checkpoint_config

    _, extra = read_checkpoint_config(bundled)
    how = f", {extra['trained_by']}" if extra.get("trained_by") else ""
    return WeightsRecord(True, f"bundled: {bundled.name}{how}")


def user_models() -> list[str]:
    """Registered variants offered to users: every name but the ``test_*`` contract toys."""
    return [name for name in list_models() if not name.startswith("test_")]


def load_model(spec: str, *, seed: int = 0, allow_untrained: bool = False) -> XTModel:
    """``spec`` is a ``.safetensors`` checkpoint path or a registered name with trained weights
    (bundled with the package). A registered architecture without trained weights is refused
    unless ``allow_untrained`` (then: a seeded random initialisation, for training starts or
    speed tests; never presented as a model)."""
    if spec.endswith(".safetensors") or Path(spec).is_file():
        return load_checkpoint(spec)
    bundled = bundled_checkpoint(spec)
    if bundled is not None:
        return load_checkpoint(bundled)
    if spec not in list_models():
        raise ConfigError(
            f"{spec!r} is neither a checkpoint file nor a registered model",
            f"pass a .safetensors checkpoint or one of: {', '.join(user_models())}",
        )
    if not allow_untrained:
        trained = [n for n in user_models() if weights_record(n).trained]
        raise ConfigError(
            f"{spec!r} is an architecture without trained weights (its output would be noise)",
            f"pass a trained checkpoint, use a trained model ({', '.join(trained)}), or add "
            "--allow-untrained for a training start or a speed test",
        )
    torch.manual_seed(seed)
    return create_model(spec).eval()


def is_trained(spec: str) -> bool:
    """A checkpoint file counts as trained weights (the user brings them); a registered name
    only with bundled weights."""
    if spec.endswith(".safetensors") or Path(spec).is_file():
        return True
    return spec in list_models() and weights_record(spec).trained


def load_model_parts(
    name: str, region_weights: str | None = None, context_head_weights: str | None = None
) -> XTModel:
    """A registered architecture with its region encoder from a plain timm state-dict file and
    the rest (token projection, context encoder, head) from a second weights file.

    The second file may be a full napari-xt checkpoint or a state dict of just those parts; its
    ``region_encoder.*`` entries, if any, are ignored. Every non-backbone weight of the model
    must be present with the right shape, or a CheckpointError names what is missing.
    """
    config = model_config(name)
    config.region_encoder.weights = region_weights
    model = create_model(config)
    if context_head_weights:
        state = read_state_dict(context_head_weights)
        own = {k: v for k, v in model.state_dict().items() if not k.startswith("region_encoder.")}
        missing = [k for k in own if k not in state and not k.startswith("pixel_")]
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            raise CheckpointError(
                f"{context_head_weights} does not fit {name}: {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(wrong)} with another shape (e.g. {wrong[:2]})",
                "save the context encoder and head of the same architecture",
            )
        model.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return model.eval()
