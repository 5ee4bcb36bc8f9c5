"""Checkpoints: config + weights round trip, safe loading, sha256, clear errors."""

import json

import pytest
import torch

from TTTInterpolationLib.config import ModelConfig
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.hashing import sha256_file
from TTTInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from TTTInterpolationLib.models.ttt_model import TTTModel


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_keeps_config_weights_and_info(tmp_path, suffix):
    model = TTTModel(ModelConfig(width=0.5, mae_mask_ratio=0.6, flow_resolution="half"))
    path = tmp_path / f"model{suffix}"
    save_checkpoint(path, model, {"trained": True, "epochs": 3})
    loaded, info = load_checkpoint(path, sha256=sha256_file(path))
    assert loaded.config == model.config
    assert loaded.uvinet.flow.resolution == "half"  # the rebuilt network runs as saved
    assert info == {"trained": True, "epochs": 3}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not list(tmp_path.glob(".*tmp"))


def test_no_sampling_grid_or_device_in_the_state(tmp_path):
    keys = TTTModel().state_dict().keys()
    assert not [k for k in keys if "grid" in k]


def test_sha256_mismatch_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, TTTModel(), {})
    with pytest.raises(InputError, match="does not match its expected sha256"):
        load_checkpoint(path, sha256="0" * 64)


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="weights file not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="cannot load weights"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InputError, match="not a TTTInterpolation checkpoint"):
        load_checkpoint(foreign)


class _Evil:
    """Unpickling this would run code; weights_only=True must refuse it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "tttinterp-checkpoint", "payload": _Evil()}, path)
    with pytest.raises(InputError, match="cannot load weights"):
        load_checkpoint(path)


def test_safetensors_metadata_is_documented_json(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, TTTModel(), {"trained": False})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "tttinterp-checkpoint" and meta["version"] == "1"
    assert json.loads(meta["model_config"])["width"] == 1.0
