"""2x2 merge token order (VILA1.5 column-major vs NVILA row-major), odd-grid padding, state-dict names."""
import pytest
import torch

from vila_ros.model.projector import DownSample2x2, MultimodalProjector


def grid(h, channels=1):
    # patch (r, c) has value r*h + c in every channel
    return torch.arange(h * h, dtype=torch.float32).repeat_interleave(channels).view(1, h * h, channels)


def test_vila15_order_4x4_is_column_major():
    out = DownSample2x2("vila1.5")(grid(4))
    # blocks with origins (0,0), (2,0), (0,2), (2,2) as (row, col); channels [p(r,c), p(r,c+1), p(r+1,c), p(r+1,c+1)]
    expected = [[0, 1, 4, 5], [8, 9, 12, 13], [2, 3, 6, 7], [10, 11, 14, 15]]
    assert out.shape == (1, 4, 4)
    assert out[0].tolist() == expected


def test_nvila_order_4x4_is_row_major():
    out = DownSample2x2("nvila")(grid(4))
    assert out[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_channels_stay_grouped_per_patch():
    out = DownSample2x2("vila1.5")(grid(4, channels=2))
    assert out[0, 1].tolist() == [8, 8, 9, 9, 12, 12, 13, 13]


def test_odd_grid_pads_zero_row_and_column():
    x = grid(3) + 1  # values 1..9 so padding zeros are visible
    out = DownSample2x2("vila1.5")(x)
    assert out.shape == (1, 4, 4)
    # blocks (0,0), (2,0), (0,2), (2,2); row 3 and column 3 are zeros
    assert out[0].tolist() == [[1, 2, 4, 5], [7, 8, 0, 0], [3, 0, 6, 0], [9, 0, 0, 0]]
    assert DownSample2x2("nvila")(x)[0].tolist() == [[1, 2, 4, 5], [3, 0, 6, 0], [7, 8, 0, 0], [9, 0, 0, 0]]
    assert DownSample2x2()(torch.zeros(2, 27 * 27, 3)).shape == (2, 196, 12)


def test_projector_state_dict_names_match_vila_files():
    keys = set(MultimodalProjector("mlp_downsample", 8, 16).state_dict())
    assert keys == {f"layers.{i}.{p}" for i in (1, 2, 4) for p in ("weight", "bias")}
    assert set(MultimodalProjector("linear", 8, 16).state_dict()) == {"layers.weight", "layers.bias"}
    assert set(MultimodalProjector("mlp2x_gelu", 8, 16).state_dict()) == {
        f"layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    proj = MultimodalProjector("mlp_downsample", 8, 16)
    assert proj.layers[1].normalized_shape == (32,) and proj.layers[2].in_features == 32
    assert MultimodalProjector("mlp3x_gelu", 8, 16)(torch.zeros(2, 5, 8)).shape == (2, 5, 16)
    with pytest.raises(ValueError):
        MultimodalProjector("conv", 8, 16)
