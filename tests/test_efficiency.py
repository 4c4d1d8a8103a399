"""benchmark.efficiency against FLOP and parameter counts worked out by hand."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from torch import nn

from benchmark import efficiency
from benchmark.efficiency import __main__ as efficiency_table


class ConvOnly(nn.Module):
    """A one-layer "method": ``predict`` applies a conv to the single modality ``x``."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=bias)

    def predict(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        assert available.dtype == torch.bool and available.shape == (1, 1) and bool(available.all())
        return self.conv(inputs["x"])


class TiedLinear(nn.Module):
    """The same ``nn.Linear(6, 6)`` applied twice (plus an alias attribute): its weights count once."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 6)
        self.second = self.first
        self.head = nn.Linear(6, 2, bias=False)

    def predict(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> dict[str, torch.Tensor]:
        x = inputs["v"].mean(dim=(2, 3))  # [1, 6]
        return {"logits": self.head(self.second(self.first(x)))}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [(5, 7), (16, 16)])
def test_conv_flops_and_params(bias: bool, size: tuple[int, int]):
    method = ConvOnly(bias)
    height, width = size
    # torch counts 2 FLOPs per multiply-add of the convolution and nothing for the bias add.
    want = 2 * 8 * 4 * 3 * 3 * height * width
    assert efficiency.inference_gflops(method, {"x": 4}, size) * 1e9 == pytest.approx(want, rel=1e-12)
    assert efficiency.parameter_count(method) == 8 * 4 * 9 + (8 if bias else 0)


def test_tied_weights_count_once():
    method = TiedLinear()
    assert efficiency.parameter_count(method) == (6 * 6 + 6) + 6 * 2
    # FLOPs do count both uses: 2 FLOPs per multiply-add, bias adds not counted; the mean is not counted.
    want = 2 * (6 * 6) * 2 + 2 * 6 * 2
    assert efficiency.inference_gflops(method, {"v": 6}, (3, 3)) * 1e9 == pytest.approx(want, rel=1e-12)


def test_training_modes_restored_and_no_gradients():
    method = ConvOnly()
    method.train()
    method.conv.eval()  # a submodule deliberately in another mode (e.g. a frozen teacher)
    seen = {}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen["training"] = module.training
        seen["grad"] = output.requires_grad

    method.conv.register_forward_hook(hook)
    efficiency.inference_gflops(method, {"x": 4}, (4, 4))
    assert seen == {"training": False, "grad": False}
    assert method.training and not method.conv.training


def test_registered_method_is_measured():
    from benchmark.methods.catalog import create_method

    method = create_method("muss", modalities={"rgb": 3, "dsm": 1}, num_classes=4)
    small = efficiency.inference_gflops(method, {"rgb": 3, "dsm": 1}, (32, 32))
    large = efficiency.inference_gflops(method, {"rgb": 3, "dsm": 1}, (64, 64))
    assert 0 < small < large
    assert large == pytest.approx(4 * small, rel=0.01)  # conv-dominated: FLOPs scale with the pixel count


def test_cli_table_and_key_values(capsys):
    assert efficiency_table.main(["--size", "32", "--methods", "muss"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| Method | Params (M) |") and "GFLOPs at 32x32" in out[0]
    row = next(line for line in out if line.startswith("| muss |"))
    assert "+0.000" in row
    values = dict(line.split("=", 1) for line in out if "=" in line and not line.startswith("|"))
    assert int(values["params_muss"]) > 0 and float(values["gflops_muss"]) > 0
    assert f"{int(values['params_muss']) / 1e6:.3f}" in row


def test_cli_bad_channels_names_the_item(capsys):
    with pytest.raises(SystemExit) as err:
        efficiency_table.main(["--channels", "rgb=3", "dsm:1", "--methods", "muss"])
    assert err.value.code == 2
    assert "'dsm:1'" in capsys.readouterr().err
