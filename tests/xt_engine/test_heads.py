from __future__ import annotations

import pytest
import torch

from xt_engine import create_model
from xt_engine.models.heads import FusionTrunk, decode_detections, segmentation_labels
from xt_engine.models.registry import model_config


def _tiny(task: str, **head: object) -> dict:
    cfg = model_config("test_convnext_txl").to_dict()
    cfg["head"].update({"task": task, **head})
    return cfg


def test_detection_outputs_and_decode_round_trip() -> None:
    model = create_model(_tiny("detection", num_classes=2)).eval()
    pixels = torch.rand(1, 2, 3, 64, 64)
    out, _ = model(pixels, torch.tensor([[0, 0], [0, 1]]), model.init_state())
    stride = model.output_stride
    assert out.heatmap.shape == (2, 2, 64 // stride, 64 // stride)
    assert out.log_size.shape == (2, 2, 64 // stride, 64 // stride)
    assert out.logits is None

    heat = torch.full((2, 16, 16), -10.0)
    heat[1, 5, 9] = 4.0  # one confident class-1 centre
    heat[0, 12, 2] = 0.0  # score 0.5
    heat[0, 12, 3] = -0.5  # a neighbour of a higher peak: suppressed
    size = torch.zeros(2, 16, 16)
    size[:, 5, 9] = torch.log(torch.tensor([6.0, 10.0]))
    rows = decode_detections(heat, size, stride=4, threshold=0.3)
    assert rows.shape == (2, 6)
    y, x, cls, score, h, w = rows[0].tolist()
    assert (y, x, cls) == (22.0, 38.0, 1.0)
    assert score == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    assert (h, w) == pytest.approx((6.0, 10.0))
    assert rows[1, :4].tolist() == [50.0, 10.0, 0.0, 0.5]


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_classification_streams_and_finishes(pool: str) -> None:
    model = create_model(_tiny("classification", num_classes=5, pool=pool)).eval()
    pixels = torch.rand(1, 4, 3, 64, 64)
    rc = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    with torch.inference_mode():
        out, state = model(pixels, rc, model.init_state())
        whole = model.finish(state)
        state = model.init_state()
        for i in range(4):
            _, state = model(pixels[:, i : i + 1], rc[i : i + 1], state)
        streamed = model.finish(state)
    assert whole.shape == (1, 5) and out.logits is None
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["transformer_xl", "sliding_window", "hyper", "none", "mamba"])
def test_attention_export_per_region(kind: str) -> None:
    cfg = model_config("test_convnext_txl").to_dict()
    # another kind; the 2-D biases unset again, so they follow it (transformer_xl only)
    cfg["context_encoder"] |= {"kind": kind, "distance_bias": None, "relative_range": None}
    model = create_model(cfg).eval()
    out, _ = model(
        torch.rand(1, 3, 3, 64, 64),
        torch.tensor([[0, 0], [0, 1], [0, 2]]),
        model.init_state(),
        need_attention=True,
    )
    gh, gw = model.token_grid
    assert out.attention.shape == (3, gh, gw)
    assert torch.isfinite(out.attention).all() and (out.attention >= 0).all()
    if kind in ("transformer_xl", "sliding_window", "hyper"):
        # real softmax weights: each query's weights over the chunk sum to 1, so the mean
        # attention received over all chunk tokens sums to the number of queries / queries = 1
        assert out.attention.sum().item() == pytest.approx(1.0, abs=1e-4)
    elif kind == "none":
        assert out.attention.abs().max() == 0  # no context: nothing changed
    else:  # mamba: implicit attention of the selective scan (not normalised)
        assert out.attention.max() > 0


def test_segmentation_labels_equal_argmax_including_ties() -> None:
    logits = torch.randn(3, 4, 17, 9)
    logits[0, :, 0, 0] = 1.0  # a four-way tie: the first class wins, as with argmax
    logits[1, 2:, 3, 4] = 5.0
    labels = segmentation_labels(logits)
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), logits.argmax(dim=1))
    assert labels[0, 0, 0] == 0 and labels[1, 3, 4] == 2
    nhwc = logits.contiguous(memory_format=torch.channels_last)
    assert torch.equal(segmentation_labels(nhwc), labels)


def test_fusion_trunk_runs_channels_last_with_the_same_values() -> None:
    """NCHW features (ViT / Swin) are fused channels-last (the fast CPU layout); same values."""
    torch.manual_seed(0)
    trunk = FusionTrunk(context_dim=8, detail_channels=6, width=16).eval()
    context = torch.randn(2, 8, 4, 4)
    features = [torch.randn(2, 6, 16, 16)]
    assert features[0].is_contiguous()
    with torch.inference_mode():
        out = trunk(context, features)
        detail = trunk.detail_proj(features[0])
        ctx = torch.nn.functional.interpolate(
            trunk.context_proj(context), size=(16, 16), mode="bilinear", align_corners=False
        )
        reference = torch.nn.functional.gelu(trunk.fuse(detail + ctx))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, reference, atol=1e-5)


def test_light_head_fuses_on_a_coarser_level() -> None:
    """``head.fusion_level`` 1: the trunk's convolutions run on the stride-8 map (4x fewer
    pixels than level 0), the logits still cover the whole region; fewer multiply-adds."""
    from xt_engine.errors import ConfigError

    cfg = model_config("test_convnext_none").to_dict()
    finest = create_model(cfg).eval()
    cfg["head"]["fusion_level"] = 1
    light = create_model(cfg).eval()
    r = light.region_size
    channels = light.region_encoder.channels
    assert light.head.trunk.detail_proj.in_channels == channels[1]
    assert finest.head.trunk.detail_proj.in_channels == channels[0]
    pixels = torch.rand(1, 2, 3, r, r)
    rc = torch.tensor([[0, 0], [0, 1]])
    seen: dict[str, tuple[int, ...]] = {}
    for name, model in (("finest", finest), ("light", light)):
        hook = model.head.trunk.fuse.register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, tuple(out.shape))
        )
        with torch.no_grad():
            outputs, _ = model(pixels, rc, model.init_state(1))
        hook.remove()
        assert outputs.logits is not None
        assert outputs.logits.shape == (2, cfg["head"]["num_classes"], r, r)
    reductions = light.region_encoder.reductions
    assert seen["finest"][-2:] == (r // reductions[0],) * 2
    assert seen["light"][-2:] == (r // reductions[1],) * 2
    cfg["head"]["fusion_level"] = 9
    with pytest.raises(ConfigError, match="fusion_level=9"):
        create_model(cfg)
    det = model_config("test_convnext_txl_det").to_dict()
    det["head"]["fusion_level"] = 1
    with pytest.raises(ConfigError, match="fusion_level=1 is not available for a detection"):
        create_model(det)
