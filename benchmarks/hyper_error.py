"""Hyper attention against exact causal attention, on the attention inputs of a trained model.

The bundled demo model ``xt_demo_sar`` (context: bidirectional ``transformer_xl``, 2 layers per
direction, 4 heads of 16 channels, 16 tokens per 128 px region) is streamed as the runtime runs
it (chunks of ``chunk_regions`` regions, carried memory) over a synthetic SAR scene of
``--height`` x ``--width`` px (default 2048 x 4096: 512 regions, 8192 tokens in raster order of
regions). A pre-forward hook on each layer's ``CausalMemoryAttention`` collects its normalised
input over the whole scene; q, k, v (1, H, N, Dh) are recomputed from it with the layer's own
``qkv``. For each of the 4 layers (forward 0, 1; backward 0, 1, whose sequence is the scene
reversed) and each prefix of ``--lengths`` tokens, :func:`hyper_attention` (LSH planes and
samples seeded as :class:`HyperContext` seeds them) runs against exact causal softmax attention
``softmax(q k^T / sqrt(Dh) + causal) v`` over the same keys. The model's own scores also carry
its learned 2-D distance bias; hyper has no bias, so both sides here leave it out.

Figures, pooled over layers, heads and queries: the relative error of each output row
``|out_h - out_e| / |out_e|`` (mean and 95th percentile), the same ratio over all rows at once
(``global``), the mean total-variation distance ``0.5 * sum_j |a_h - a_e|`` between attention
rows (up to ``--tv-max`` keys: hyper's rows are its output for ``v`` the identity), and for
scale the error of causal uniform averaging and the exact rows' mean effective number of keys
``exp(entropy)``. Prints a table and writes ``hyper_error.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xt_engine.models.context.hyper import hyper_attention, sample_seed
from xt_engine.synthetic import make_sar_scene
from xt_engine.weights.loading import load_model

# (block_size, num_samples, num_hashes); the first is the config default
SETTINGS = [(256, 256, 7), (128, 128, 7), (512, 512, 7), (256, 256, 3), (256, 1024, 7)]


def scene_tokens(model, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) uint8 -> tokens (1, N, D) with positions added, positions (N, 2), regions in
    raster order."""
    r = model.region_size
    rows, cols = image.shape[0] // r, image.shape[1] // r
    pixels = torch.from_numpy(image[: rows * r, : cols * r].astype(np.float32) / 255.0)
    regions = pixels.view(rows, r, cols, r).permute(0, 2, 1, 3).reshape(rows * cols, 1, r, r)
    rc = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1)
    rc = rc.reshape(-1, 2)
    parts, places = [], []
    for start in range(0, len(regions), 64):
        _, tokens, positions = model.encode(
            regions[None, start : start + 64], rc[start : start + 64]
        )
        parts.append(tokens)
        places.append(positions)
    return torch.cat(parts, dim=1), torch.cat(places)


def layer_inputs(model, tokens: torch.Tensor, positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stream the context encoder like the runtime; -> per layer, its normalised attention input
    (1, N, D) over the whole sequence (the backward layers' in reversed order)."""
    context = model.context_encoder
    gh, gw = model.token_grid
    chunk = model.config.context_encoder.chunk_regions * gh * gw
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for side in ("forward", "backward"):
        for index, layer in enumerate(getattr(context, f"{side}_encoder").layers):
            name = f"{side}.{index}"
            captured[name] = []

            def hook(_module, args, name=name):
                captured[name].append(args[0].detach())

            hooks.append(layer.attn.register_forward_pre_hook(hook))
    try:
        for side, seq, pos in (
            ("forward", tokens, positions),
            ("backward", tokens.flip(1), positions.flip(0)),
        ):
            encoder = getattr(context, f"{side}_encoder")
            state = encoder.init_state(1, tokens.device, tokens.dtype)
            for start in range(0, seq.shape[1], chunk):
                _, state = encoder(seq[:, start : start + chunk], pos[start : start + chunk], state)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(parts, dim=1) for name, parts in captured.items()}


def qkv_of(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``CausalMemoryAttention`` ``attn``, input (1, N, D) -> q, k, v (1, H, N, Dh)."""
    _, n, dim = x.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(x).view(1, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    return q.contiguous(), k.contiguous(), v.contiguous()


def exact_rows(q: torch.Tensor, k: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Exact causal attention rows of queries ``start:stop``: (B, H, stop - start, N)."""
    scores = (q[:, :, start:stop] @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    future = torch.arange(k.shape[2])[None, :] > torch.arange(start, stop)[:, None]
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def measure(q, k, v, layer: int, setting, seed: int, tv: bool) -> dict[str, np.ndarray]:
    """One layer, one prefix, one setting -> per-row figures (H * N,) as numpy arrays."""
    block, samples, hashes = setting
    n = q.shape[2]
    planes = torch.randn(q.shape[-1], hashes, generator=torch.Generator().manual_seed(seed + layer))

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(sample_seed(seed, layer, 0))

    out_h = hyper_attention(q, k, v, 0, planes, block, samples, generator())
    rel, rel_uniform, effective, total_variation = [], [], [], []
    squared = np.zeros(2)  # sum |out_h - out_e|^2, sum |out_e|^2
    counts = torch.arange(1, n + 1, dtype=v.dtype)[:, None]
    uniform = v.cumsum(2) / counts
    step = 1024
    for head in range(q.shape[1]):
        one = slice(head, head + 1)
        rows_h = None
        if tv:  # hyper's own rows: its output for v the identity (the same samples)
            eye = torch.eye(n, dtype=v.dtype)[None, None]
            rows_h = hyper_attention(
                q[:, one], k[:, one], eye, 0, planes, block, samples, generator()
            )
            torch.testing.assert_close(rows_h @ v[:, one], out_h[:, one], atol=1e-4, rtol=1e-4)
        for start in range(0, n, step):
            stop = min(n, start + step)
            rows_e = exact_rows(q[:, one], k[:, one], start, stop)  # (1, 1, S, N)
            out_e = (rows_e @ v[:, one])[0, 0]
            norm = out_e.norm(dim=-1)
            squared += [
                float((out_h[0, head, start:stop] - out_e).square().sum()),
                float(norm @ norm),
            ]
            rel.append(((out_h[0, head, start:stop] - out_e).norm(dim=-1) / norm).numpy())
            rel_uniform.append(((uniform[0, head, start:stop] - out_e).norm(dim=-1) / norm).numpy())
            entropy = -(rows_e * rows_e.clamp_min(1e-30).log()).sum(-1)[0, 0]
            effective.append(entropy.exp().numpy())
            if rows_h is not None:
                gap = (rows_h[0, 0, start:stop] - rows_e[0, 0]).abs().sum(-1) * 0.5
                total_variation.append(gap.numpy())
    return {
        "rel": np.concatenate(rel),
        "rel_uniform": np.concatenate(rel_uniform),
        "effective_keys": np.concatenate(effective),
        "tv": np.concatenate(total_variation) if total_variation else np.zeros(0),
        "squared": squared,
    }


def summary(parts: list[dict[str, np.ndarray]]) -> dict[str, float | None]:
    """Pool per-row figures over layers and heads."""

    def pooled(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    rel, tv = pooled("rel"), pooled("tv")
    squared = np.sum([p["squared"] for p in parts], axis=0)
    return {
        "rel_mean": float(rel.mean()),
        "rel_p95": float(np.percentile(rel, 95)),
        "rel_global": float(np.sqrt(squared[0] / squared[1])),
        "tv_mean": float(tv.mean()) if tv.size else None,
        "uniform_rel_mean": float(pooled("rel_uniform").mean()),
        "effective_keys": float(pooled("effective_keys").mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--tv-max", type=int, default=2048, help="longest prefix with TV rows")
    parser.add_argument("--seed", type=int, default=0, help="hyper_seed")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    model = load_model("xt_demo_sar").eval()
    image, _ = make_sar_scene((args.height, args.width), seed=11)
    tokens, positions = scene_tokens(model, image)
    inputs = layer_inputs(model, tokens, positions)
    attns = {
        f"{side}.{i}": layer.attn
        for side in ("forward", "backward")
        for i, layer in enumerate(getattr(model.context_encoder, f"{side}_encoder").layers)
    }
    qkv = {name: qkv_of(attns[name], x) for name, x in inputs.items()}
    lengths = [n for n in args.lengths if n <= tokens.shape[1]]
    rows, per_layer = [], {}
    started = time.perf_counter()
    for setting in SETTINGS:
        for n in lengths:
            parts = []
            for name, (q, k, v) in qkv.items():
                layer = int(name.rsplit(".", 1)[1])
                part = measure(
                    q[:, :, :n],
                    k[:, :, :n],
                    v[:, :, :n],
                    layer,
                    setting,
                    args.seed,
                    n <= args.tv_max,
                )
                parts.append(part)
                per_layer[f"{setting}/{n}/{name}"] = summary([part])
            block, samples, hashes = setting
            row = {"block_size": block, "num_samples": samples, "num_hashes": hashes, "keys": n}
            rows.append(row | summary(parts))
            print(f"  {setting} {n}: {time.perf_counter() - started:.0f} s", flush=True)

    head = (
        f"{'block':>5s} {'samples':>7s} {'hashes':>6s} {'keys':>5s} {'rel mean':>8s} "
        f"{'rel p95':>7s} {'global':>6s} {'TV mean':>7s} {'uniform':>7s} {'eff. keys':>9s}"
    )
    print(head)
    for r in rows:
        tv = f"{r['tv_mean']:7.3f}" if r["tv_mean"] is not None else f"{'-':>7s}"
        print(
            f"{r['block_size']:5d} {r['num_samples']:7d} {r['num_hashes']:6d} {r['keys']:5d} "
            f"{r['rel_mean']:8.3f} {r['rel_p95']:7.3f} {r['rel_global']:6.3f} {tv} "
            f"{r['uniform_rel_mean']:7.3f} {r['effective_keys']:9.1f}"
        )
    result = {
        "model": "xt_demo_sar",
        "scene": [args.height, args.width],
        "tokens": int(tokens.shape[1]),
        "hyper_seed": args.seed,
        "rows": rows,
        "per_layer": per_layer,
        "seconds": time.perf_counter() - started,
    }
    (out / "hyper_error.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
