"""The flat-buffer path: gradients kept between steps become views of one padded buffer.

It must give the foreach path's trajectory, engage only when the caller keeps its gradient
tensors (``zero_grad(set_to_none=False)``), and step aside when they are replaced.
"""

import pytest
import torch
from torch import nn

import bng
from bng.normalize import _OFF, _FlatGrads
from bng_helpers import SmallCNN, TinyLM, assert_same_params, loss_of, mlp18, train, twin

BASES = {
    "sgdm": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}),
    "adam": (torch.optim.Adam, {"lr": 1e-2}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-2}),
}
MODELS = {"mlp18": mlp18, "cnn": SmallCNN, "lstm": TinyLM}


def pair(make, base: str, mode: str, **kwargs):
    """Twin models: one allowed the flat path, one held to the foreach path."""
    torch.manual_seed(0)
    flat_model = make()
    foreach_model = twin(flat_model)
    cls, options = BASES[base]
    flat = bng.build(flat_model, base=cls, mode=mode, **options, **kwargs)
    foreach = bng.build(foreach_model, base=cls, mode=mode, flat_grads=False, **options, **kwargs)
    return flat_model, flat, foreach_model, foreach


def assert_close_params(a: nn.Module, b: nn.Module) -> None:
    """Equal up to float32 rounding: the flat path sums each norm in a different order
    (rows of 128, then blocks), which drifts by ~1e-7 a step over 20 steps."""
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def flat_state(opt: torch.optim.Optimizer):
    return opt._bng_normalizer._flat


def one_buffer(model: nn.Module) -> bool:
    """Whether every gradient lives in the same storage (the adopted flat buffer)."""
    storages = {p.grad.untyped_storage().data_ptr() for p in model.parameters()}
    return len(storages) == 1


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("mode", ["ng", "adap", "clip"])
def test_flat_path_matches_the_foreach_path(model_name: str, base: str, mode: str) -> None:
    flat_model, flat, foreach_model, foreach = pair(MODELS[model_name], base, mode)
    train(flat_model, flat, 20, set_to_none=False)
    train(foreach_model, foreach, 20, set_to_none=False)
    assert isinstance(flat_state(flat), _FlatGrads)  # adopted after two steps
    assert one_buffer(flat_model) and not one_buffer(foreach_model)
    assert_close_params(flat_model, foreach_model)
    torch.testing.assert_close(bng.last_block_norms(flat), bng.last_block_norms(foreach))
    # the padding between blocks is never written, so it stays exactly zero
    state = flat_state(flat)
    covered = torch.zeros_like(state.buffer, dtype=torch.bool)
    for view in state.views:
        covered[view.storage_offset():view.storage_offset() + view.numel()] = True
    assert not state.buffer[~covered].any()


def test_not_adopted_when_gradients_are_set_to_none() -> None:
    flat_model, flat, foreach_model, foreach = pair(mlp18, "sgdm", "ng")
    train(flat_model, flat, 5)  # torch's default zero_grad(set_to_none=True)
    train(foreach_model, foreach, 5)
    assert flat_state(flat) is _OFF and not one_buffer(flat_model)
    assert_same_params(flat_model, foreach_model, exact=True)


def test_replaced_gradients_drop_the_buffer_and_training_goes_on() -> None:
    flat_model, flat, foreach_model, foreach = pair(SmallCNN, "adam", "ng")
    for model, opt in ((flat_model, flat), (foreach_model, foreach)):
        train(model, opt, 4, set_to_none=False)
        train(model, opt, 4, first_step=4, set_to_none=True)  # e.g. a switch to model.zero_grad()
    assert flat_state(flat) is _OFF
    assert_close_params(flat_model, foreach_model)


def test_gradient_accumulation_and_grad_scaler_on_the_flat_path() -> None:
    """Two micro-batches accumulate into the views; a fused Adam under GradScaler unscales."""
    torch.manual_seed(0)
    flat_model = mlp18()
    foreach_model = twin(flat_model)
    runs = []
    for model, flat_grads in ((flat_model, True), (foreach_model, False)):
        opt = bng.AdamNG(model, lr=1e-2, mode="clip", fused=True, flat_grads=flat_grads)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(6):
            opt.zero_grad(set_to_none=False)
            for micro in range(2):
                scaler.scale(loss_of(model, 2 * step + micro)).backward()
            scaler.step(opt)
            scaler.update()
        runs.append(opt)
    assert isinstance(flat_state(runs[0]), _FlatGrads)
    assert_close_params(flat_model, foreach_model)


def test_channels_last_gradients_keep_their_strides() -> None:
    flat_model, flat, foreach_model, foreach = pair(SmallCNN, "sgdm", "ng")
    flat_model.to(memory_format=torch.channels_last)
    foreach_model.to(memory_format=torch.channels_last)
    train(flat_model, flat, 5, set_to_none=False)
    train(foreach_model, foreach, 5, set_to_none=False)
    assert isinstance(flat_state(flat), _FlatGrads)
    assert flat_model.conv1.weight.grad.stride() == flat_model.conv1.weight.stride()
    assert flat_model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_close_params(flat_model, foreach_model)


def test_module_to_after_adoption_drops_the_buffer() -> None:
    """`model.to(memory_format=...)` swaps each conv p.grad's storage but keeps the tensor
    object: the hook must notice and stop scaling the stale buffer."""
    flat_model, flat, foreach_model, foreach = pair(SmallCNN, "sgdm", "ng")
    for model, opt in ((flat_model, flat), (foreach_model, foreach)):
        train(model, opt, 3, set_to_none=False)
        model.to(memory_format=torch.channels_last)
        train(model, opt, 3, first_step=3, set_to_none=False)
    assert flat_state(flat) is _OFF
    assert_close_params(flat_model, foreach_model)


def test_mixed_dtypes_stay_on_the_foreach_path() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8).double(), nn.Linear(8, 5))
    opt = bng.SGDMNG(model, lr=0.1)
    for step in range(3):
        opt.zero_grad(set_to_none=False)
        x = torch.randn(4, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        model[1](model[0](x).float()).square().mean().backward()
        opt.step()
    assert flat_state(opt) is _OFF


def test_flat_grads_false_and_mode_none_never_copy() -> None:
    for kwargs in ({"flat_grads": False}, {"mode": "none"}):
        torch.manual_seed(0)
        model = mlp18()
        opt = bng.build(model, base=torch.optim.SGD, lr=0.1, **{"mode": "ng", **kwargs})
        train(model, opt, 4, set_to_none=False)
        assert flat_state(opt) is _OFF and not one_buffer(model)


def test_zero_gradient_block_on_the_flat_path() -> None:
    """A block whose gradient is zero every step gets factor 0, never NaN (as on foreach)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 5), nn.Linear(3, 3))
    opt = bng.SGDMNG(model, lr=0.1, mode="adap")
    unused_before = model[1].weight.detach().clone()
    for step in range(4):
        opt.zero_grad(set_to_none=False)
        x = torch.randn(4, 20, generator=torch.Generator().manual_seed(step))
        dead = sum(p.sum() for p in model[1].parameters())  # zero gradient, not None
        (model[0](x).square().mean() + 0.0 * dead).backward()
        opt.step()
    assert isinstance(flat_state(opt), _FlatGrads)
    assert torch.isfinite(bng.last_block_norms(opt)).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.equal(model[1].weight, unused_before)


def _ddp_worker(rank: int, world: int, init_file: str, bucket_view: bool, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    results = {}
    for flat_grads in (True, False):
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(
            SmallCNN(), gradient_as_bucket_view=bucket_view
        )
        opt = bng.SGDMNG(model.module, lr=0.05, flat_grads=flat_grads)
        for step in range(5):
            opt.zero_grad(set_to_none=False)
            g = torch.Generator().manual_seed(10 * step + rank)  # each rank its own batch
            x, y = torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        state = opt._bng_normalizer._flat
        results[flat_grads] = ([p.detach().clone() for p in model.parameters()],
                               isinstance(state, _FlatGrads))
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


@pytest.mark.parametrize(
    "bucket_view",
    [False, pytest.param(True, marks=pytest.mark.slow)],  # ~6 s each: two gloo processes
    ids=["grad-copy", "bucket-view"],
)
def test_ddp_with_persistent_gradients(bucket_view: bool, tmp_path) -> None:
    """DDP copies the averaged gradient into p.grad (kept: the flat path stays) or, with
    gradient_as_bucket_view, points p.grad at its bucket (the flat path steps aside); both
    train exactly like the foreach path."""
    out = tmp_path / "result.pt"
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, str(tmp_path / "init"), bucket_view, str(out)), nprocs=2
    )
    results = torch.load(out)
    flat_params, adopted = results[True]
    foreach_params, _ = results[False]
    assert adopted is (not bucket_view)
    for p, q in zip(flat_params, foreach_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
