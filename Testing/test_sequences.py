"""Motion learned in time and work on whole sequences: the temporal architecture, evaluation
protocols, filling with own-frame adaptation and the linear guard, upsampling, training on
full sequences, and the rule that a hidden frame never reaches the model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from TTTInterpolationLib.config import ModelConfig, TTTConfig
from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.volume_io import read_4d, write_4d
from TTTInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from TTTInterpolationLib.models.loading import LoadedModel
from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.volume import Sequence4D
from TTTInterpolationLib.workflows.evaluation import evaluate_cases
from TTTInterpolationLib.workflows.fill import FillJob, Gap, blend, fill, held_in_triplets
from TTTInterpolationLib.workflows.inference import interpolate_sequence, upsample_sequence
from TTTInterpolationLib.workflows.protocols import pair_case, protocol_case
from TTTInterpolationLib.workflows.settings import EvalSetting
from TTTInterpolationLib.workflows.train_sequences import (
    SequenceTrainOptions,
    TripletSampler,
    train_sequences,
)

SIZE = (32, 32, 16)
TEMPORAL = ModelConfig(architecture="uvinet-temporal", heads="flow")


def temporal_model(seed: int = 0, visible_motion: bool = False) -> LoadedModel:
    """An untrained temporal model; ``visible_motion`` gives its motion network (and so its
    frames) a clearly non-zero output, so tests can see what it changes."""
    torch.manual_seed(seed)
    model = TTTModel(TEMPORAL)
    if visible_motion:
        with torch.no_grad():
            model.uvinet.motion.out.weight.normal_(0.0, 0.05)
            model.uvinet.motion.out.bias.normal_(0.0, 0.5)
    return LoadedModel(model.eval(), torch.device("cpu"), True, "test model")


@pytest.fixture(scope="module")
def cine() -> Sequence4D:
    return make_phantom_sequence("cardiac", 12, SIZE, seed=3)


# -- the architecture -------------------------------------------------------------------------

def test_temporal_model_keeps_both_ends_exact_whatever_its_motion_network_says():
    net = temporal_model(visible_motion=True).model.uvinet
    i0, i1 = (torch.rand(1, 1, *SIZE) for _ in range(2))
    flows = net.flow(i0, i1)
    with torch.no_grad():
        at0 = net.synthesize(i0, i1, 0.0, flows, ([], []))[0]
        at1 = net.synthesize(i0, i1, 1.0, flows, ([], []))[0]
        half = net.synthesize(i0, i1, 0.5, flows, ([], []))[0]
    assert torch.allclose(at0, i0, atol=1e-5) and torch.allclose(at1, i1, atol=1e-5)
    fused = 0.5 * i0 + 0.5 * i1  # the untrained flow net barely moves anything
    assert float((half - fused).abs().max()) > 1e-3  # the motion network does act mid-way


def test_temporal_model_is_linear_blending_where_nothing_moves():
    net = temporal_model().model.uvinet  # zero-initialised motion output
    i0 = torch.rand(1, 1, *SIZE)
    still = net.interpolate(i0, i0.clone(), [0.25, 0.5, 0.75])
    for frame in still:
        assert torch.allclose(frame, i0, atol=1e-4)
    i1 = torch.rand(1, 1, *SIZE)
    frame = net.interpolate(i0, i1, [0.3], precision="fp32")[0]
    phi01, phi10 = net.flow(i0, i1)
    assert float(phi01.detach().abs().max()) < 1e-3  # untrained flows are near zero ...
    assert torch.allclose(frame, (0.7 * i0 + 0.3 * i1).clamp(0, 1), atol=1e-3)  # ... so: blend


def test_temporal_checkpoint_round_trip_keeps_the_architecture(tmp_path):
    model = temporal_model(visible_motion=True).model
    save_checkpoint(tmp_path / "m.safetensors", model, {})
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.config.architecture == "uvinet-temporal" and loaded.uvinet.refine is None
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_an_unknown_architecture_is_one_input_error():
    with pytest.raises(InputError, match="unknown architecture 'resnet'"):
        ModelConfig(architecture="resnet")


# -- protocols --------------------------------------------------------------------------------

def test_protocols_split_visible_and_hidden_frames(cine):
    edes = protocol_case(cine, "edes", 0, 5, "c")
    assert edes.visible.index_values == [0, 5, 6, 7, 8, 9, 10, 11]
    assert [g.hidden for g in edes.gaps] == [(1, 2, 3, 4)] and edes.pairs == ((0, 5),)
    assert edes.gaps[0].times == pytest.approx((0.2, 0.4, 0.6, 0.8))
    x2 = protocol_case(cine, "x2", name="c")
    assert x2.visible.index_values == [0, 2, 4, 6, 8, 10]  # frame 11 is dropped, not scored
    assert [g.hidden for g in x2.gaps] == [(1,), (3,), (5,), (7,), (9,)]
    x4 = protocol_case(cine, "x4", name="c")
    assert x4.visible.index_values == [0, 4, 8] and x4.num_hidden == 6
    assert all(g.times == pytest.approx((0.25, 0.5, 0.75)) for g in x4.gaps)
    for case in (edes, x2, x4):
        for gap, truths in zip(case.gaps, case.truths, strict=True):
            for h, truth in zip(gap.hidden, truths, strict=True):
                assert np.array_equal(truth, cine.frames[h])
    with pytest.raises(InputError, match="edes needs frames between ed and es"):
        protocol_case(cine, "edes", 3, 4)


def test_a_reversed_pair_hides_the_same_frames_and_counts_time_from_a(cine):
    case = pair_case(cine, 6, 2)
    assert case.visible.index_values == [0, 1, 2, 6, 7, 8, 9, 10, 11]
    (gap,) = case.gaps
    assert case.visible.index_values[gap.a] == 6 and case.visible.index_values[gap.b] == 2
    assert gap.hidden == (5, 4, 3) and gap.times == pytest.approx((0.25, 0.5, 0.75))


# -- a hidden frame never reaches the model, the adaptation or the guard -----------------------

def _with_hidden_replaced(seq: Sequence4D, hidden: set[int], seed: int) -> Sequence4D:
    """``seq`` with every hidden frame replaced by noise inside the sequence's own range (so
    the scoring window stays the same; only what a leak could see changes)."""
    rng = np.random.default_rng(seed)
    frames = seq.frames.copy()
    low, high = float(seq.frames.min()), float(seq.frames.max())
    for h in hidden:
        frames[h] = rng.uniform(low, high, frames[h].shape).astype(np.float32)
    return replace(seq, frames=frames)


@pytest.mark.parametrize("protocol", ["edes", "x2", "x4"])
def test_predictions_do_not_depend_on_hidden_frames(cine, protocol):
    loaded = temporal_model(visible_motion=True)
    settings = [EvalSetting("own frames", "uvinet", TTTConfig("frames", steps=2)),
                EvalSetting("own frames, no guard", "uvinet",
                            TTTConfig("frames", steps=2, guard=False)),
                EvalSetting("rotation", "uvinet", TTTConfig("rotation", steps=1)),
                EvalSetting("registration", "registration")]
    runs = []
    for seed in (None, 1):
        case = protocol_case(cine, protocol, 0, 5, "c")
        hidden = {h for g in case.gaps for h in g.hidden}
        seq = cine if seed is None else _with_hidden_replaced(cine, hidden, seed)
        evaluation = evaluate_cases([protocol_case(seq, protocol, 0, 5, "c")], settings,
                                    model=loaded)
        low, high = evaluation.cases[0].window
        runs.append({label: [p * (high - low) + low for p in preds[0]]
                     for label, preds in evaluation.predictions.items()})
        assert evaluation.cases[0].window == protocol_case(cine, protocol, 0, 5).window
    for label in runs[0]:
        for a, b in zip(runs[0][label], runs[1][label], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=label)


def test_interpolate_between_two_items_never_sees_the_frames_between_them(cine):
    loaded = temporal_model(visible_motion=True)
    config = TTTConfig("frames", steps=2, guard=False)  # the guard could hide a leak
    outputs = []
    for seed in (None, 2):
        seq = cine if seed is None else _with_hidden_replaced(cine, {2, 3, 4, 5}, seed)
        outputs.append(interpolate_sequence(seq, (1, 6), [0.5], ttt=config, model=loaded).frames)
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


def test_the_leak_test_itself_can_fail(cine):
    """The same comparison sees a difference when a visible frame changes (not hidden)."""
    loaded = temporal_model(visible_motion=True)
    config = TTTConfig("frames", steps=2, guard=False)
    a = interpolate_sequence(cine, (1, 6), [0.5], ttt=config, model=loaded).frames
    b = interpolate_sequence(_with_hidden_replaced(cine, {8}, 2), (1, 6), [0.5], ttt=config,
                             model=loaded).frames
    assert float(np.abs(a - b).max()) > 1e-3


# -- filling: own-frame adaptation and the linear guard ---------------------------------------

def test_held_in_triplets_are_visible_frames_and_checks_are_kept_apart(cine):
    case = protocol_case(cine, "x2")
    train, checks = held_in_triplets(case.visible, 2.0, FillJob(case.visible, []).grid())
    assert train and checks and not any(t is c for t in train for c in checks)
    assert all(0.0 < t.t < 1.0 for t in train + checks)


def _loss_on(model: TTTModel, triplets) -> float:
    """Mean Charbonnier of the model's frames on ``triplets`` (float32, no autocast)."""
    with torch.no_grad():
        stacked = [torch.cat([getattr(t, k) for t in triplets]) for k in ("i0", "i1", "target")]
        return float(model.frame_loss(*stacked, torch.tensor([t.t for t in triplets]))[1])


def test_frames_task_adapts_to_the_sequence_own_frames(cine):
    from TTTInterpolationLib.models.ttt import adapt_and_apply
    from TTTInterpolationLib.workflows.fill import prepare_gap

    loaded = temporal_model(visible_motion=True)  # a poor start: room to adapt
    train, checks = held_in_triplets(cine, 4.0, FillJob(cine, []).grid())
    case = prepare_gap(cine.frames[0], cine.frames[1], [0.5]).case
    case.triplets, case.checks = train, checks
    before = _loss_on(loaded.model, train)
    steps: list[float] = []
    (after,) = adapt_and_apply(loaded.model, [case], TTTConfig("frames", steps=20, lr=1e-3,
                                                                guard=False),
                               lambda adapted, c: _loss_on(adapted, c.triplets),
                               on_loss=lambda i, s, loss: steps.append(loss))
    assert len(steps) == 20 and after < 0.95 * before, (before, after)
    assert _loss_on(loaded.model, train) == before  # the caller's model is untouched


def test_guard_falls_back_to_linear_blending_where_the_model_is_worse(cine):
    loaded = temporal_model(visible_motion=True)
    with torch.no_grad():  # a model that moves everything far: worse than blending
        loaded.model.uvinet.motion.out.bias[:6].fill_(20.0)
    job = FillJob(cine, [Gap(k, k + 1, (0.5,)) for k in range(cine.num_frames - 1)])
    guarded = fill([job], "uvinet", TTTConfig(), loaded)[0]
    assert guarded.used == "linear (guard)"
    assert guarded.held_in["model"] < guarded.held_in["linear"]
    for k, frames in enumerate(guarded.frames):
        np.testing.assert_array_equal(frames[0], blend(cine.frames[k], cine.frames[k + 1], 0.5))
    unguarded = fill([job], "uvinet", TTTConfig(guard=False), loaded)[0]
    assert unguarded.used == "model"
    # One gap (a pair, ED -> ES): the visible frames lie outside it, the guard stays out.
    pair = pair_case(cine, 2, 7)
    single = fill([FillJob(pair.visible, pair.gaps)], "uvinet", TTTConfig(), loaded)[0]
    assert single.used == "model" and not single.held_in
    assert float(np.abs(unguarded.frames[0][0] - guarded.frames[0][0]).max()) > 1e-3


def test_frames_task_needs_frames_outside_the_gap():
    a = make_phantom_sequence("cardiac", 2, SIZE, seed=1)
    with pytest.raises(InputError, match="TTT 'frames' needs at least three frames"):
        interpolate_sequence(a, (0, 1), [0.5], ttt="frames", model=temporal_model())


# -- upsampling -------------------------------------------------------------------------------

def test_upsample_keeps_the_input_frames_and_puts_new_ones_between_in_time_order(cine):
    seq = replace(cine, index_values=[2.0 * v for v in cine.index_values])
    out = upsample_sequence(seq, 3, method="linear")
    assert out.num_frames == 12 + 11 * 2
    assert out.index_values[:4] == pytest.approx([0.0, 2 / 3, 4 / 3, 2.0])
    assert out.geometry == seq.geometry and out.index_name == seq.index_name
    for i in range(12):
        np.testing.assert_array_equal(out.frames[3 * i], seq.frames[i])
    np.testing.assert_allclose(out.frames[1], blend(seq.frames[0], seq.frames[1], 1 / 3))


def test_upsample_with_the_model_loads_once_and_fills_every_gap(cine):
    out = upsample_sequence(cine, 2, ttt="frames", steps=2, model=temporal_model())
    assert out.num_frames == 23 and np.isfinite(out.frames).all()


@pytest.mark.parametrize("factor, message", [(1, "--factor must be a whole number >= 2"),
                                             (2.5, "--factor must be a whole number >= 2")])
def test_upsample_refuses_a_bad_factor(cine, factor, message):
    with pytest.raises(InputError, match=message):
        upsample_sequence(cine, factor, method="linear")


def test_upsample_refuses_unsorted_index_values(cine):
    seq = replace(cine, index_values=[0.0, 2.0, 1.0, *cine.index_values[3:]])
    with pytest.raises(InputError, match="strictly increasing"):
        upsample_sequence(seq, 2, method="linear")


# -- training on full sequences ---------------------------------------------------------------

def test_triplet_sampler_draws_gaps_of_every_workflow_and_targets_between():
    frames = np.stack([np.full((20, 20, 8), float(i), np.float32) for i in range(20)])
    sampler = TripletSampler([frames + np.random.default_rng(0).random(frames.shape)], SIZE)
    rng = np.random.default_rng(0)
    gaps = [sampler.gap(rng, 20) for _ in range(400)]
    assert min(gaps) == 2 and max(gaps) == 15 and 0.15 < np.mean(np.array(gaps) == 2) < 0.35
    i0, i1, target, t = sampler.sample(rng)
    assert i0.shape == target.shape == (1, 1, *SIZE) and 0 < float(t) < 1


def test_triplet_batches_carry_the_held_axis_their_sequences_share():
    frames = np.random.default_rng(0).random((6, 20, 20, 8)).astype(np.float32)
    stack = TripletSampler([frames, frames], SIZE, held_axes=[2, 2])
    mixed = TripletSampler([frames, frames], SIZE, held_axes=[2, None])
    rng = np.random.default_rng(1)
    stack.batch(rng, 4)
    assert stack.batch_axis == 2
    axes = set()
    for _ in range(8):
        mixed.batch(rng, 1)
        axes.add(mixed.batch_axis)
    assert axes == {2, None}  # one-sequence batches keep their own axis
    for _ in range(8):
        mixed.batch(rng, 6)
        if len(set(mixed._last_axes)) > 1:
            assert mixed.batch_axis is None


def _write_case_list(tmp_path, n: int = 2) -> str:
    rows = ["case,path,ed,es,split"]
    for k in range(n):
        path = tmp_path / f"seq{k}.nii.gz"
        write_4d(path, make_phantom_sequence("cardiac", 10, SIZE, seed=k))
        rows.append(f"seq{k},{path.name},0,4,train")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "cases.csv")


def test_training_on_sequences_resumes_exactly_and_writes_its_files(tmp_path):
    cases = _write_case_list(tmp_path)
    base = dict(cases=cases, steps_per_epoch=3, batch=1, size=SIZE, precision="fp32",
                device="cpu", seed=4)
    whole = train_sequences(SequenceTrainOptions(out=str(tmp_path / "a.safetensors"), epochs=2,
                                                 **base), log=lambda m: None)
    train_sequences(SequenceTrainOptions(out=str(tmp_path / "b.safetensors"), epochs=1, **base),
                    log=lambda m: None)
    resumed = train_sequences(SequenceTrainOptions(out=str(tmp_path / "b.safetensors"),
                                                   epochs=2, resume=True, **base),
                              log=lambda m: None)
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole])
    a, _ = load_checkpoint(tmp_path / "a.safetensors")
    b, info = load_checkpoint(tmp_path / "b.safetensors")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert info["epochs"] == 2 and b.config.architecture == "uvinet-temporal"
    assert len(json.loads((tmp_path / "b.history.json").read_text())) == 2
    assert (tmp_path / "b.optim.pt").is_file()


def test_a_resumed_run_trains_at_the_learning_rate_it_is_given(tmp_path):
    cases = _write_case_list(tmp_path, 1)
    base = dict(cases=cases, out=str(tmp_path / "m.safetensors"), steps_per_epoch=1, batch=1,
                size=SIZE, precision="fp32", device="cpu")
    train_sequences(SequenceTrainOptions(epochs=1, lr=1e-3, **base), log=lambda m: None)
    train_sequences(SequenceTrainOptions(epochs=2, lr=1e-5, resume=True, **base),
                    log=lambda m: None)
    state = torch.load(tmp_path / "m.optim.pt", weights_only=True)["optimizer"]
    assert [g["lr"] for g in state["param_groups"]] == pytest.approx([1e-6, 1e-5])


def test_training_from_a_uvinet_checkpoint_keeps_its_flow_weights(tmp_path):
    cases = _write_case_list(tmp_path, 1)
    torch.manual_seed(1)
    base = TTTModel(ModelConfig(heads="flow"))
    save_checkpoint(tmp_path / "base.safetensors", base, {})
    train_sequences(SequenceTrainOptions(cases=cases, out=str(tmp_path / "t.safetensors"),
                                         init=str(tmp_path / "base.safetensors"), epochs=1,
                                         steps_per_epoch=1, batch=1, size=SIZE, lr=1e-12,
                                         precision="fp32", device="cpu"), log=lambda m: None)
    trained, _ = load_checkpoint(tmp_path / "t.safetensors")
    for name, value in base.uvinet.flow.state_dict().items():
        torch.testing.assert_close(trained.uvinet.flow.state_dict()[name], value,
                                   atol=1e-8, rtol=0)


def test_upsample_command_writes_a_sequence_and_refuses_bad_input(tmp_path, cine):
    from TTTInterpolationLib.cli import main

    src, out = tmp_path / "in.seq.nrrd", tmp_path / "out.seq.nrrd"
    write_4d(src, cine)
    assert main(["upsample", str(src), "--factor", "2", "--method", "linear", "--progress",
                 "none", "-o", str(out)]) == 0
    result = read_4d(out)
    assert result.num_frames == 23 and result.index_values[1] == pytest.approx(0.5)
    assert main(["upsample", str(src), "--factor", "1", "--method", "linear",
                 "-o", str(tmp_path / "bad.seq.nrrd")]) == 2
    assert not (tmp_path / "bad.seq.nrrd").exists()
