"""CLAP loss (kikimimi.methods.clap): hand-computed InfoNCE, logit-scale clamp, global-batch gather."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from kikimimi.methods.clap import (
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    LogitScale,
    clamp_logit_scale_,
    clip_infonce,
    gather_with_grad,
    new_logit_scale,
)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def test_infonce_equals_hand_computation_3x3() -> None:
    audio = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 3.0, 1.0]]
    text = [[2.0, 0.1, 1.0], [1.0, -2.0, 0.5], [-0.5, 1.0, 3.0]]
    log_scale = 1.3
    scale = math.exp(log_scale)
    a = [_unit(v) for v in audio]
    t = [_unit(v) for v in text]
    # logits[i][j] = scale * cos(a_i, t_j)
    logits = [[scale * sum(x * y for x, y in zip(a[i], t[j], strict=True)) for j in range(3)] for i in range(3)]
    # audio → text: row-wise log-softmax, take the diagonal
    a2t = -sum(_log_softmax(logits[i])[i] for i in range(3)) / 3
    # text → audio: column-wise log-softmax (rows of the transpose)
    cols = [[logits[i][j] for i in range(3)] for j in range(3)]
    t2a = -sum(_log_softmax(cols[j])[j] for j in range(3)) / 3
    expected = 0.5 * (a2t + t2a)

    got = clip_infonce(torch.tensor(audio), torch.tensor(text), torch.tensor(log_scale))
    assert got.shape == ()
    assert float(got) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # the scale is the log temperature: a float gives the same value; scaling the inputs changes nothing
    assert float(clip_infonce(torch.tensor(audio) * 7, torch.tensor(text), log_scale)) == pytest.approx(expected, 1e-6)
    # the two directions differ here, so a one-sided loss would not match
    assert abs(a2t - t2a) > 1e-3


def test_infonce_perfect_alignment_is_low_and_shape_errors() -> None:
    x = torch.eye(4) * 5
    low = clip_infonce(x, x, LOGIT_SCALE_MAX)
    high = clip_infonce(x, x.roll(1, dims=0), LOGIT_SCALE_MAX)
    assert float(low) < 0.01 < float(high)
    with pytest.raises(ValueError, match="same shape"):
        clip_infonce(torch.zeros(3, 4), torch.zeros(3, 5), 1.0)


def test_logit_scale_init_and_clamp_after_a_step() -> None:
    p = new_logit_scale()
    assert p.shape == () and float(p.detach()) == pytest.approx(math.log(1 / 0.07))
    assert LOGIT_SCALE_INIT == pytest.approx(2.6593, abs=1e-4)
    opt = torch.optim.SGD([p], lr=100.0)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    clip_infonce(x, x, p).backward()  # aligned pairs → gradient pushes the scale up
    opt.step()
    assert float(p.detach()) > LOGIT_SCALE_MAX  # the raw step overshoots ln 100 …
    clamp_logit_scale_(p)
    assert float(p.detach()) == pytest.approx(math.log(100.0))  # … and the clamp brings it back
    with torch.no_grad():
        p.fill_(-3.0)
    clamp_logit_scale_(p)
    assert float(p.detach()) == 0.0
    mod = LogitScale()
    with torch.no_grad():
        mod.value.fill_(9.0)
    assert float(mod.clamp_().value.detach()) == pytest.approx(LOGIT_SCALE_MAX)
    assert float(mod().detach()) == pytest.approx(100.0, rel=1e-5)


def test_gather_is_identity_without_process_group() -> None:
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


# ----------------------------------------------------------------------------- two ranks (gloo)
def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        audio, text = _data()
        shard = slice(rank * 4, (rank + 1) * 4)
        a = audio[shard].clone().requires_grad_(True)
        t = text[shard].clone().requires_grad_(True)
        scale = torch.tensor(2.0, requires_grad=True)
        loss = clip_infonce(a, t, scale)
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "grad_a": a.grad, "grad_t": t.grad, "grad_s": scale.grad},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_gathered_loss_equals_single_process_loss_on_concatenated_batch(tmp_path) -> None:
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    audio, text = _data()
    a = audio.clone().requires_grad_(True)
    t = text.clone().requires_grad_(True)
    scale = torch.tensor(2.0, requires_grad=True)
    full = clip_infonce(a, t, scale)
    full.backward()
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert float(res["loss"]) == pytest.approx(float(full.detach()), rel=1e-6)  # global batch of 8, not 4
        shard = slice(rank * 4, (rank + 1) * 4)
        # the local shard kept its gradient: identical to the full-batch gradient of those rows
        assert torch.allclose(res["grad_a"], a.grad[shard], atol=1e-6)
        assert torch.allclose(res["grad_t"], t.grad[shard], atol=1e-6)
    # a local-only loss (4 pairs) would differ
    assert float(clip_infonce(audio[:4], text[:4], 2.0)) != pytest.approx(float(full.detach()), rel=1e-3)
