"""Test-time training: each scheme's semantics, every task changes the interpolation."""

import copy
from dataclasses import replace

import pytest
import torch

from TTTInterpolationLib.config import ModelConfig, TTTConfig
from TTTInterpolationLib.models.ttt import (
    Case,
    _Adapter,
    adapt_and_apply,
    consistency,
    predict,
    run_ttt,
    trainable_parameters,
)
from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.nn.heads import random_patch_mask

from .conftest import blob_pair


def _case(seed: int, shift: float = 2.0) -> Case:
    a, b = blob_pair((32, 32, 16), shift=shift, seed=seed)
    return Case(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], [0.5])


@pytest.fixture(scope="module")
def model() -> TTTModel:
    """An untrained model whose refinement output is not near zero, as after training.

    A fresh model's last refinement conv is N(0, 1e-5), which would hide any change of the
    features behind float rounding; a trained one is not that small.
    """
    torch.manual_seed(0)
    m = TTTModel()
    torch.nn.init.normal_(m.uvinet.refine.out.weight, std=0.05)
    return m


def _config(task: str, scheme: str = "online", steps: int = 2) -> TTTConfig:
    # Learning rates large enough that two steps visibly move an untrained model; no guard,
    # which could keep the pretrained prediction (its own test is below).
    return TTTConfig(task=task, scheme=scheme, steps=steps, lr=1e-2, guard=False)


@pytest.mark.parametrize("task", ["rotation", "mae", "cycle"])
def test_adaptation_changes_the_interpolation_for_every_task(model, task):
    case = _case(0)
    before = run_ttt(model, [case], TTTConfig())[0][0]
    after = run_ttt(model, [case], _config(task))[0][0]
    assert float((after - before).abs().max()) > 1e-6


def test_caller_model_is_not_modified(model):
    state = copy.deepcopy(model.state_dict())
    run_ttt(model, [_case(0)], _config("cycle"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_online_case_result_does_not_depend_on_earlier_cases(model):
    target = _case(2)
    alone = run_ttt(model, [target], _config("mae"))[0][0]
    after_other = run_ttt(model, [_case(1, shift=4.0), target], _config("mae"))[1][0]
    assert torch.equal(alone, after_other)


def test_minibatch_carries_weights_to_the_next_case(model):
    target = _case(2)
    alone = run_ttt(model, [target], _config("mae", "minibatch"))[0][0]
    after_other = run_ttt(model, [_case(1, shift=4.0), target], _config("mae", "minibatch"))[1][0]
    assert not torch.equal(alone, after_other)


def test_minibatch_first_case_equals_online_first_case(model):
    cases = [_case(1), _case(2)]
    online = run_ttt(model, cases, _config("rotation"))
    minibatch = run_ttt(model, cases, _config("rotation", "minibatch"))
    assert torch.equal(online[0][0], minibatch[0][0])


def test_naive_predicts_after_adapting_on_all_cases(model):
    cases = [_case(1), _case(2)]
    naive = run_ttt(model, cases, _config("rotation", "naive", steps=1))
    # One epoch of naive = one step on case 1 then one on case 2; case 1 is predicted with
    # weights that saw case 2, unlike the mini-batch scheme.
    minibatch = run_ttt(model, cases, _config("rotation", "minibatch", steps=1))
    assert not torch.equal(naive[0][0], minibatch[0][0])
    assert torch.equal(naive[1][0], minibatch[1][0])


def test_losses_are_reported_and_seeded(model):
    seen: list[tuple[int, int, float]] = []
    run_ttt(model, [_case(0)], _config("mae", steps=3), on_loss=lambda *a: seen.append(a))
    again: list[tuple[int, int, float]] = []
    run_ttt(model, [_case(0)], _config("mae", steps=3), on_loss=lambda *a: again.append(a))
    assert [s[:2] for s in seen] == [(0, 0), (0, 1), (0, 2)]
    assert seen == again


def test_trainable_parameter_sets(model):
    features = trainable_parameters(model, "features")
    assert sum(p.numel() for p in features) == 13556
    assert len(trainable_parameters(model, "all")) == len(list(model.uvinet.parameters()))
    # the paper's heads read the feature extractor, so that is their trunk
    assert trainable_parameters(model, "trunk") == features
    flow = TTTModel(ModelConfig(heads="flow"))
    # 2 -> 16 -> 32 channels, 3x3x3 convolutions with bias
    assert sum(p.numel() for p in trainable_parameters(flow, "trunk")) == (
        2 * 16 * 27 + 16 + 16 * 32 * 27 + 32)


def test_flow_trunk_ttt_moves_the_motion_and_nothing_else():
    """With heads on the flow encoder, rotation/MAE TTT changes the flow (what decides the
    interpolation), and only the trunk's weights move."""
    torch.manual_seed(0)
    model = TTTModel(ModelConfig(heads="flow"))
    case = _case(0)
    plain = run_ttt(model, [case], TTTConfig())[0][0]
    for task in ("rotation", "mae"):
        adapter = _Adapter(model, _config(task, steps=3).resolved())
        for _ in range(3):
            adapter.step(case)
        moved = {n for n, p in adapter.model.named_parameters()
                 if not torch.equal(p, model.state_dict()[n])}
        assert moved and all(n.startswith("uvinet.flow.encoder.0.")
                             or n.startswith("uvinet.flow.encoder.1.") for n in moved), moved
        with torch.no_grad():
            before = model.uvinet.flow(case.i0, case.i1)[0]
            after = adapter.model.uvinet.flow(case.i0, case.i1)[0]
        assert not torch.equal(before, after)
        adapted = run_ttt(model, [case], _config(task, steps=3))[0][0]
        assert not torch.equal(adapted, plain)


def test_flow_mae_masks_each_frame_on_its_own():
    model = TTTModel(ModelConfig(heads="flow"))
    case = _case(0)
    generator = torch.Generator().manual_seed(0)
    loss = model.mae_loss([case.i0, case.i1], generator)
    assert torch.isfinite(loss)
    masks = random_patch_mask((2, 1, *case.i0.shape[2:]), model.config.mae_patch,
                              model.config.mae_mask_ratio, torch.Generator().manual_seed(0))
    assert not torch.equal(masks[0], masks[1])  # what the loss drew for the two frames


def test_auto_adapt_resolves_per_task():
    assert TTTConfig(task="cycle").resolved().adapt == "all"
    assert TTTConfig(task="mae").resolved().adapt == "trunk"
    assert TTTConfig(task="rotation").resolved().adapt == "trunk"
    resolved = TTTConfig(task="mae").resolved()
    assert (resolved.optimizer, resolved.lr, resolved.weight_decay) == ("adamw", 2e-4, 0.05)
    assert TTTConfig(task="rotation").resolved().lr == 1e-4


def test_zero_steps_is_plain_inference(model):
    case = _case(0)
    plain = run_ttt(model, [case], TTTConfig())[0][0]
    zero = run_ttt(model, [case], TTTConfig(task="cycle", steps=0))[0][0]
    assert torch.equal(plain, zero)


def _features_snapshot(adapted: TTTModel, case: Case) -> dict[str, torch.Tensor]:
    assert not adapted.training  # apply always sees the model in eval mode
    return {k: v.clone() for k, v in adapted.uvinet.features.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_adapt_and_apply_sees_each_scheme_s_model_at_prediction_time(model):
    cases = [_case(1, shift=4.0), _case(2)]
    pretrained = _features_snapshot(model.eval(), cases[0])
    online = adapt_and_apply(model, cases, _config("rotation"), _features_snapshot)
    alone = adapt_and_apply(model, cases[1:], _config("rotation"), _features_snapshot)
    assert _same(online[1], alone[0]) and not _same(online[0], online[1])
    assert not _same(online[0], pretrained)
    naive = adapt_and_apply(model, cases, _config("rotation", "naive"), _features_snapshot)
    assert _same(naive[0], naive[1])  # every case predicted with the final weights
    plain = adapt_and_apply(model, cases, TTTConfig(), lambda m, c: m)
    assert plain[0] is model  # no adaptation: the caller's own model, unmodified
    assert _same(_features_snapshot(model, cases[0]), pretrained)


def test_guard_keeps_the_pretrained_prediction_when_ttt_breaks_the_model(model):
    """A learning rate of 1 wrecks the model in two cycle steps: with the guard the prediction
    is the pretrained one, without it the wrecked one; every case is compared."""
    cases = [_case(0), _case(1)]
    plain = run_ttt(model, cases, TTTConfig())
    wreck = TTTConfig(task="cycle", steps=2, lr=1.0)
    seen: list[tuple[int, float, float]] = []
    guarded = adapt_and_apply(model, cases, wreck, predict, on_guard=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == [0, 1] and all(after < before for _, before, after in seen)
    assert all(torch.equal(g[0], p[0]) for g, p in zip(guarded, plain, strict=True))
    unguarded = run_ttt(model, cases, replace(wreck, guard=False))
    assert not torch.equal(unguarded[0][0], plain[0][0])


def test_consistency_is_repeatable_and_prefers_the_true_motion():
    """The guard's score: same value twice; a model that finds no motion rebuilds a moving
    pair worse than the pair's own ends rebuilt without motion would suggest is impossible to
    beat, so compare instead a still pair (perfect) with a moving one."""
    torch.manual_seed(0)
    model = TTTModel()
    moving, still = _case(0), _case(0, shift=0.0)
    assert consistency(model, moving) == consistency(model, moving)
    assert consistency(model, still) > consistency(model, moving)
