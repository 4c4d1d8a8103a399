"""Random rescaling of training batches (benchmark.augment) against numpy transcriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.augment import draw_rescale, random_rescale, rescale_crop
from benchmark.config import FieldError, TrainConfig, from_mapping
from benchmark.train import Ranks, step_generator

LABEL = np.arange(36).reshape(6, 6)  # every pixel its own class: where each comes from is visible


def test_an_enlarged_label_is_the_window_of_its_nearest_neighbour_upsampling():
    """Factor 2: each pixel becomes a 2 x 2 block (np.repeat); a window of 6 x 6 of the 12 x 12 at
    floor(fraction * 7) per axis."""
    out = rescale_crop(torch.from_numpy(LABEL), 2.0, (0.5, 0.99), fill=255, nearest=True).numpy()
    big = np.repeat(np.repeat(LABEL, 2, axis=0), 2, axis=1)
    assert np.array_equal(out, big[3:9, 6:12])


def test_a_shrunk_label_is_placed_on_ignored_pixels():
    """Factor 0.5: nearest neighbour keeps every other pixel (torch's rule, floor(i * 2)); the 3 x 3
    lands at floor(fraction * 4) per axis, the rest is ignore_index."""
    out = rescale_crop(torch.from_numpy(LABEL), 0.5, (0.0, 0.74), fill=255, nearest=True).numpy()
    expected = np.full((6, 6), 255)
    expected[0:3, 2:5] = LABEL[::2, ::2]
    assert np.array_equal(out, expected)


def test_an_image_is_resized_bilinearly_and_padded_with_zeros():
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    same = rescale_crop(image, 1.0, (0.3, 0.7), fill=0.0, nearest=False)
    assert torch.equal(same, image)  # factor 1: the identity, wherever the window is drawn
    small = rescale_crop(image, 0.5, (1.0 - 1e-9, 0.0), fill=0.0, nearest=False)
    # bilinear halving without corner alignment averages each 2 x 2 block
    blocks = image.numpy().reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))
    assert np.allclose(small[:, 4:, :4].numpy(), blocks, atol=1e-6)
    assert float(small[:, :4].abs().sum()) == 0 and float(small[:, :, 4:].abs().sum()) == 0


def test_the_draws_are_made_for_the_global_batch_so_shards_match_one_process():
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 5, (4, 8, 8), generator=torch.Generator().manual_seed(2))
    full, full_target = random_rescale({"a": x}, target, step_generator(0, 3), (0.5, 2.0), 255)
    for rank in (0, 1):
        rows = Ranks(rank, 2).rows(4)
        part, part_target = random_rescale(
            {"a": x[rows]}, target[rows], step_generator(0, 3), (0.5, 2.0), 255, batch_size=4, rows=rows
        )
        assert torch.equal(part["a"], full["a"][rows]) and torch.equal(part_target, full_target[rows])
    factors, _ = draw_rescale(1000, (0.5, 2.0), torch.Generator().manual_seed(0))
    assert 0.5 <= float(factors.min()) and float(factors.max()) <= 2.0 and abs(float(factors.mean()) - 1.25) < 0.05
    assert full["a"].shape == x.shape and full_target.dtype == torch.int64
    assert set(full_target.unique().tolist()) <= {*range(5), 255}


@pytest.mark.parametrize("bad", [[2.0, 0.5], [0, 1.0], [1.0], [0.5, 1.0, 2.0]])
def test_a_bad_scale_range_is_named(bad):
    with pytest.raises(FieldError, match=r"train.scale_range"):
        from_mapping(TrainConfig, {"scale_range": bad}, "params.yaml: train")
    assert from_mapping(TrainConfig, {"scale_range": [0.5, 2]}, "train").scale_range == [0.5, 2.0]
