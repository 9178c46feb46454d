"""Issue 19: fine-tuning a trained generator into one with wider decoder levels (``models/widening.py``,
``dctnet train --init`` with ``--set model.decoder_channels=…``): it starts as the same function, and its new
channels learn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from DCTNetLib.errors import InputError
from DCTNetLib.models.attention import SelfAttention3d
from DCTNetLib.models.generator import DCTNetGenerator
from DCTNetLib.models.widening import widen_into

pytestmark = pytest.mark.usefixtures("one_thread")

# head_dim 8: the 8 → 16-channel level gains a second head of the same width, the 4 → 8-channel level keeps one
# head that grows (its scores are rescaled); attention at every level, a product path whose gate reads the last level
COMMON = dict(image_size=32, stem_channels=8, encoder_blocks=(1, 1, 1), growth_rate=4, decoder_convs=(1, 1, 1),
              attention_levels=(True, True, True), attention=dict(head_dim=8, full_max_tokens=64, max_kv_tokens=64),
              fusion_rank=16, fusion_dropout=0.0, product_channels=2)
NARROW = (16, 8, 4, 4)
WIDE = (16, 16, 8, 8)


def _generator(channels, seed):
    torch.manual_seed(seed)
    model = DCTNetGenerator(decoder_channels=channels, **COMMON)
    with torch.no_grad():  # a trained model: attention gates and the product mix are no longer zero
        for module in model.modules():
            if isinstance(module, SelfAttention3d):
                module.gate.fill_(0.7)
        model.product.mix.weight.normal_(0.0, 0.3)
    return model.eval()


def test_the_widened_generator_computes_what_the_narrow_one_does():
    narrow, wide = _generator(NARROW, 0), _generator(WIDE, 1)
    radiographs = torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        before = wide(radiographs)
        widen_into(wide, narrow)
        expected, got = narrow(radiographs), wide(radiographs)
    assert float((before - expected).abs().max()) > 1e-3  # a different network until widened
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the wide network really is wider, and its new channels are alive (fresh weights in, zero weights out)
    assert wide.levels[0].up[0].weight.shape[1] == 16 and narrow.levels[0].up[0].weight.shape[1] == 8
    assert float(wide.levels[0].up[0].weight[:, 8:].abs().sum()) > 0
    assert float(wide.levels[1].up[0].weight[8:, :4].abs().sum()) == 0  # old outputs ignore the new inputs


def test_the_new_channels_learn():
    narrow, wide = _generator(NARROW, 0), _generator(WIDE, 1)
    widen_into(wide, narrow).train()
    radiographs, target = torch.rand(1, 2, 32, 32), torch.rand(1, 1, 32, 32, 32)
    torch.nn.functional.mse_loss(wide(radiographs), target).backward()
    # the zeros out of the new channels get a gradient, so a step moves them
    assert float(wide.levels[1].up[0].weight.grad[8:, :4].abs().sum()) > 0
    assert float(wide.head[0].weight.grad[:, 4:].abs().sum()) > 0


def test_widening_refuses_what_it_cannot_keep():
    narrow = _generator(NARROW, 0)
    with pytest.raises(ValueError, match="cannot widen"):
        widen_into(narrow, _generator(WIDE, 1))  # narrower, not wider
    source = DCTNetGenerator(decoder_channels=(16, 12, 4, 4), **COMMON)
    target = DCTNetGenerator(decoder_channels=(16, 16, 4, 4), **COMMON)
    assert source.levels[0].attn.heads == 1 and target.levels[0].attn.heads == 2
    with pytest.raises(ValueError, match="regroup"):  # one head of 12 channels cannot become two of 8
        widen_into(target, source)


def test_train_init_widens_a_bundle_and_refuses_a_narrower_run(tiny_bundle_path):
    from DCTNetLib.checkpoints.bundle import load_model_bundle
    from DCTNetLib.commands.train import initialise_generators
    from DCTNetLib.models.presets import build_generator, gan_preset

    source = load_model_bundle(tiny_bundle_path)
    channels = tuple(source.gan_preset["generator"].get("decoder_channels", gan_preset("tiny").generator.decoder_channels))

    def trainer(decoder_channels):
        preset = gan_preset("tiny", generator={"decoder_channels": decoder_channels})
        return SimpleNamespace(preset=preset, g_raw=build_generator(preset.generator),
                               g_bs=build_generator(preset.generator))

    wider = (channels[0], *(c * 2 for c in channels[1:-1]), channels[-1])  # the FC seed keeps its width
    grown = trainer(wider)
    initialise_generators(grown, tiny_bundle_path)
    radiographs = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grown.g_raw.eval()(radiographs), source.g_raw.eval()(radiographs), rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(grown.g_bs.eval()(radiographs), source.g_bs.eval()(radiographs), rtol=0,
                                   atol=1e-5)
    for other in ((channels[0], *(max(1, c // 2) for c in channels[1:-1]), channels[-1]),  # narrower
                  (channels[0] * 2, *channels[1:])):  # a wider FC seed
        with pytest.raises(InputError, match="as wide or wider"):
            initialise_generators(trainer(other), tiny_bundle_path)
