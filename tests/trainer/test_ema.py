"""EMA of the trainable weights: warm-up decay, update cadence, swap-in, state round trip."""

from __future__ import annotations

import pytest
import torch
from rewardflow_trainer.ema import EMA


def _param(value: float, n: int = 3) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.full((n,), value))


def test_warm_up_decay_is_capped_at_decay():
    ema = EMA([_param(0.0)], decay=0.9)
    assert ema.current_decay(0) == pytest.approx(0.1)
    assert ema.current_decay(7) == pytest.approx(8 / 17)
    assert ema.current_decay(80) == 0.9 and ema.current_decay(10_000) == 0.9


def test_updates_only_every_n_steps_with_the_reference_formula():
    p = _param(0.0)
    ema = EMA([p], decay=0.9, update_every=8)
    expected = 0.0
    for step in range(24):
        with torch.no_grad():
            p.fill_(float(step + 1))
        updated = ema.step(step)
        assert updated == ((step + 1) % 8 == 0)
        if updated:
            d = min((1 + step) / (10 + step), 0.9)
            expected = d * expected + (1 - d) * (step + 1)
        assert torch.allclose(ema.shadow[0], torch.full((3,), expected))
    assert ema.num_updates == 3


def test_swapped_in_uses_ema_weights_and_restores_live_ones():
    p = _param(1.0)
    ema = EMA([p], decay=0.5, update_every=1)
    with torch.no_grad():
        p.fill_(3.0)
    ema.step(100)  # d = 0.5: shadow = 0.5*1 + 0.5*3 = 2
    with ema.swapped_in():
        assert torch.equal(p.detach(), torch.full((3,), 2.0))
    assert torch.equal(p.detach(), torch.full((3,), 3.0))
    with pytest.raises(RuntimeError), ema.swapped_in():
        raise RuntimeError("eval failed")
    assert torch.equal(p.detach(), torch.full((3,), 3.0))  # restored even when the block raises


def test_half_precision_params_keep_a_float32_shadow():
    p = torch.nn.Parameter(torch.full((2,), 1.0, dtype=torch.float16))
    ema = EMA([p], decay=0.9, update_every=1)
    assert ema.shadow[0].dtype == torch.float32
    with torch.no_grad():
        p.fill_(2.0)
    ema.step(0)
    with ema.swapped_in():
        assert p.dtype == torch.float16 and p[0].item() == pytest.approx(1.9, abs=1e-3)


def test_state_dict_round_trip_continues_identically():
    a_param, b_param = _param(0.0), _param(0.0)
    a = EMA([a_param], decay=0.9, update_every=2)
    for step in range(6):
        with torch.no_grad():
            a_param.add_(1.0)
        a.step(step)
    b = EMA([b_param], decay=0.1, update_every=5)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b_param.copy_(a_param)
    for step in range(6, 10):
        for param, ema in ((a_param, a), (b_param, b)):
            with torch.no_grad():
                param.add_(1.0)
            ema.step(step)
    assert torch.equal(a.shadow[0], b.shadow[0]) and b.num_updates == a.num_updates == 5


def test_load_rejects_a_different_trainable_set():
    ema = EMA([_param(0.0, 3)])
    with pytest.raises(ValueError, match=r"shape \(4,\), expected \(3,\)"):
        ema.load_state_dict(EMA([_param(0.0, 4)]).state_dict())
    with pytest.raises(ValueError, match="2 tensors, expected 1"):
        ema.load_state_dict(EMA([_param(0.0), _param(0.0)]).state_dict())
