"""Start a wider generator as a trained narrower one: the same function, room to learn more.

Fine-tuning a trained generator with more channels at some decoder levels (``decoder_channels``) should not throw
its training away. :func:`widen_into` copies the narrow network's weights into the wide one so that, before any
step, both compute the same volume; the new channels then learn from there. This is the "function-preserving
widening" of Net2Net (Chen, Goodfellow & Shlens, ICLR 2016), in its simplest form: a new channel gets fresh
weights *into* it (the wide network's own initialisation) and zero weights *out of* it, so it changes nothing
until training moves those zeros — and it does move them, because the new channel's activations are not zero.

Per layer (``old`` = the narrow network's sizes):

* ``Conv2d``/``Conv3d`` weight ``(out, in, …)``: ``[:out_old, :in_old]`` copied, ``[:out_old, in_old:]`` zero,
  rows ``out_old:`` kept as initialised; bias ``[:out_old]`` copied;
* ``ConvTranspose3d`` weight ``(in, out, …)``: the same with the two axes swapped;
* :class:`~DCTNetLib.models.attention.SelfAttention3d`: keys and values are one convolution laid out as
  ``(2, C)`` output rows, so each half is copied on its own; the new channels' query rows are zero (so the old
  attention scores do not change), and the old query rows are scaled by ``√(C_new / C_old)`` because scaled
  dot-product attention divides by the square root of the head width, which grows with ``C`` while there is
  one head (below 64 channels); a block that gains heads of its old width keeps its scores as they are, and one
  whose heads would be regrouped is refused;
* instance norm has no weights in this project's generators (``affine=False``); any other layer with weights
  must have the same shape in both networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import SelfAttention3d

__all__ = ["widen_into"]

_CONVS = (nn.Conv2d, nn.Conv3d)


def _copy_block(target: torch.Tensor, source: torch.Tensor, *, out_dim: int, in_dim: int) -> None:
    """Copy ``source`` into the leading block of ``target`` and zero the new inputs of the old outputs."""
    if target.ndim != source.ndim or any(t < s for t, s in zip(target.shape, source.shape)):
        raise ValueError(f"cannot widen a {tuple(source.shape)} weight into {tuple(target.shape)}")
    index = tuple(slice(0, n) for n in source.shape)
    target[index] = source
    old_out, old_in = source.shape[out_dim], source.shape[in_dim]
    new_inputs = [slice(None)] * target.ndim
    new_inputs[out_dim], new_inputs[in_dim] = slice(0, old_out), slice(old_in, None)
    target[tuple(new_inputs)] = 0.0


def _widen_conv(target: nn.Module, source: nn.Module) -> None:
    transposed = isinstance(target, nn.ConvTranspose3d)
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    _copy_block(target.weight, source.weight, out_dim=out_dim, in_dim=in_dim)
    if source.bias is not None:
        target.bias[: source.bias.shape[0]] = source.bias


def _widen_attention(target: SelfAttention3d, source: SelfAttention3d) -> None:
    old, new = source.to_q.out_channels, target.to_q.out_channels
    if old == new:
        for name in ("to_q", "to_kv", "to_out"):
            _widen_conv(getattr(target, name), getattr(source, name))
    else:
        old_width, new_width = old // source.heads, new // target.heads
        if target.heads != 1 and old_width != new_width:
            raise ValueError(f"widening {source.heads}-head attention to {target.heads} heads of another width "
                             f"({old_width} -> {new_width} channels) would regroup its channels")
        # scaled_dot_product_attention divides by √(head width): a single head that grows is rescaled; heads of
        # the old width, appended after the old ones, leave the old scores alone
        scale = math.sqrt(new_width / old_width)
        _widen_conv(target.to_q, source.to_q)
        target.to_q.weight[:old] *= scale
        target.to_q.bias[:old] *= scale
        target.to_q.weight[old:] = 0.0  # new query channels add nothing to the old scores
        target.to_q.bias[old:] = 0.0
        for half in range(2):  # to_kv's rows are (keys C, values C)
            rows_t, rows_s = slice(half * new, half * new + new), slice(half * old, half * old + old)
            weight = target.to_kv.weight[rows_t]
            _copy_block(weight, source.to_kv.weight[rows_s], out_dim=0, in_dim=1)
            target.to_kv.bias[half * new: half * new + old] = source.to_kv.bias[rows_s]
        _widen_conv(target.to_out, source.to_out)
    target.gate.copy_(source.gate)


@torch.no_grad()
def widen_into(target: nn.Module, source: nn.Module) -> nn.Module:
    """Load ``source``'s weights into ``target``, a copy of its architecture with as many or more channels per
    layer, so that ``target`` computes what ``source`` does (module docstring). Returns ``target``.

    Raises:
        ValueError: the two networks do not have the same layers, or a layer of ``target`` is narrower.
    """
    targets, sources = dict(target.named_modules()), dict(source.named_modules())
    if targets.keys() != sources.keys():
        raise ValueError("widen_into needs the same layers in both networks; they differ in "
                         f"{sorted(targets.keys() ^ sources.keys())[:5]}")
    inside_attention = set()
    for name, module in targets.items():
        other = sources[name]
        if type(module) is not type(other):
            raise ValueError(f"layer {name!r} is a {type(other).__name__} in the source, {type(module).__name__} here")
        if isinstance(module, SelfAttention3d):
            _widen_attention(module, other)
            inside_attention.update(f"{name}.{child}" if name else child for child in ("to_q", "to_kv", "to_out"))
        elif name in inside_attention:
            continue
        elif isinstance(module, (*_CONVS, nn.ConvTranspose3d)):
            _widen_conv(module, other)
        else:
            own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
            theirs = dict(other.named_parameters(recurse=False)) | dict(other.named_buffers(recurse=False))
            for key, value in own.items():
                if value.shape != theirs[key].shape:
                    raise ValueError(f"{name}.{key}: cannot widen a {type(module).__name__} "
                                     f"({tuple(theirs[key].shape)} -> {tuple(value.shape)})")
                value.copy_(theirs[key])
    return target
