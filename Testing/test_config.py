"""Config objects validate with one clear line naming the accepted values."""

import pytest

from TTTInterpolationLib.config import ModelConfig, TTTConfig
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.runtime.device import resolve_device


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "jigsaw"}, "unknown TTT task 'jigsaw': choose one of none, rotation, mae, cycle"),
        ({"scheme": "batch"}, "unknown TTT scheme 'batch'"),
        ({"adapt": "heads"}, "unknown parameters to adapt 'heads'"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
        ({"steps": -1}, "TTT steps must be >= 0"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"weight_decay": -1.0}, "weight decay must be >= 0"),
    ],
)
def test_ttt_config_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        TTTConfig(**kwargs)


def test_model_config_round_trip_and_errors():
    config = ModelConfig(width=0.5, mae_patch=[4, 4, 2])
    assert config.mae_patch == (4, 4, 2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="unknown model settings"):
        ModelConfig.from_dict({"depth": 3})
    with pytest.raises(InputError, match="mask ratio"):
        ModelConfig(mae_mask_ratio=1.0)


def test_device_resolution_on_this_machine():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        resolve_device("tpu")
