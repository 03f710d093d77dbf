"""The sandwich step of usrl.nn: gradients equal hand-built losses in both backward modes, the
width comes back whatever happens, one set of log keys."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from usrl.nn import (
    SandwichLog,
    USLinear,
    backward_clipped,
    backward_guarded,
    get_width,
    make_slimmable,
    mse_distill,
    random_widths,
    sandwich_step,
    set_width,
    width,
)

WIDTHS = [1.0, 0.25, 0.6, 0.45]


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        USLinear(5, 32, slim_in=False), nn.ReLU(), USLinear(32, 32), nn.ReLU(), USLinear(32, 3, slim_out=False)
    )
    return make_slimmable(net)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)


def _hand_built(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, distill_weight: float, student_weight: float
) -> torch.Tensor:
    teacher = net(x)
    total = F.l1_loss(teacher, y)
    for w in WIDTHS[1:]:
        with width(net, w):
            out = net(x)
        student = distill_weight * F.mse_loss(out, teacher.detach()) + (1 - distill_weight) * F.l1_loss(out, y)
        total = total + student_weight * student
    return total


def _grads(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("per_width_backward", [False, True])
@pytest.mark.parametrize(("distill_weight", "student_weight"), [(1.0, 1.0), (0.7, 1 / 3)])
def test_gradients_equal_the_hand_built_losses(
    per_width_backward: bool, distill_weight: float, student_weight: float
) -> None:
    net, (x, y) = _net(), _batch()
    _hand_built(net, x, y, distill_weight, student_weight).backward()
    expected = _grads(net)
    net.zero_grad()

    seen: list[bool] = []

    def forward(learns_own: bool) -> torch.Tensor:
        seen.append(learns_own)
        return net(x)

    result = sandwich_step(
        net, WIDTHS, forward, lambda out, _first: F.l1_loss(out, y), mse_distill,
        distill_weight=distill_weight, student_weight=student_weight,
        backward=(lambda loss: loss.backward()) if per_width_backward else None,
    )  # fmt: skip
    if per_width_backward:
        assert result.total is None
    else:
        assert result.total is not None
        result.total.backward()
    for name, grad in _grads(net).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)
    # the teacher always learns its own loss; the students only when it is mixed in
    assert seen == [True, *[distill_weight < 1.0] * 3]
    assert [r.role for r in result.widths] == ["full", "low", "random", "random"]
    assert [r.width for r in result.widths] == WIDTHS
    assert result.widths[0].distill == {} and all("loss" in r.distill for r in result.widths[1:])
    torch.testing.assert_close(result.first, net(x).detach(), rtol=0, atol=0)


def test_without_distillation_and_with_random_widths_every_width_learns_its_own_loss() -> None:
    net, (x, y) = _net(), _batch()
    own = lambda out, _first: F.l1_loss(out, y)  # noqa: E731
    plain = sandwich_step(net, WIDTHS, lambda _o: net(x), own, None, student_weight=0.5)
    ran = sandwich_step(net, WIDTHS, lambda _o: net(x), own, mse_distill, student_weight=0.5, sandwich=False)
    assert [r.role for r in ran.widths] == ["random"] * 4 and all(not r.distill for r in ran.widths)
    expected = [F.l1_loss(net(x), y)]
    for w in WIDTHS[1:]:
        with width(net, w):
            expected.append(F.l1_loss(net(x), y))
    assert plain.total is not None and ran.total is not None
    # student_weight weighs the students of a sandwich only; random widths all weigh 1
    torch.testing.assert_close(plain.total, expected[0] + 0.5 * sum(expected[1:]))
    torch.testing.assert_close(ran.total, sum(expected))


def test_a_fixed_teacher_replaces_the_first_widths_output() -> None:
    net, (x, y) = _net(), _batch()
    fixed = torch.zeros(8, 3)
    result = sandwich_step(
        net, [1.0, 0.25], lambda _o: net(x), lambda o, _f: F.l1_loss(o, y), mse_distill, fixed_teacher=fixed
    )
    with width(net, 0.25):
        assert result.widths[1].distill["loss"] == pytest.approx(F.mse_loss(net(x), fixed).item(), rel=1e-6)


@pytest.mark.parametrize("per_width_backward", [False, True])
def test_the_width_is_restored_after_an_exception(per_width_backward: bool) -> None:
    net, (x, y) = _net(), _batch()
    set_width(net, 0.8)
    calls = 0

    def forward(_learns_own: bool) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("boom")
        return net(x)

    with pytest.raises(RuntimeError, match="boom"):
        sandwich_step(net, WIDTHS, forward, lambda o, _f: F.l1_loss(o, y), mse_distill,
                      backward=(lambda loss: loss.backward()) if per_width_backward else None)  # fmt: skip
    assert get_width(net) == 0.8
    with pytest.raises(FloatingPointError, match="width 0.250"):
        sandwich_step(net, WIDTHS, lambda _o: net(x), lambda o, _f: F.l1_loss(o, y), lambda s, t: s.sum() * float("nan"),
                      check_finite=True)  # fmt: skip
    assert get_width(net) == 0.8
    for bad in ({"distill_weight": 1.5}, {"distill_weight": -0.1}):
        with pytest.raises(ValueError, match="distill_weight"):
            sandwich_step(net, WIDTHS, lambda _o: net(x), lambda o, _f: F.l1_loss(o, y), **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one width"):
        sandwich_step(net, [], lambda _o: net(x), lambda o, _f: F.l1_loss(o, y))


def test_sync_context_wraps_every_width_but_the_last() -> None:
    net, (x, y) = _net(), _batch()
    entered: list[int] = []

    class Sync:
        def __enter__(self) -> None:
            entered.append(len(entered))

        def __exit__(self, *exc: object) -> None:
            return None

    sandwich_step(net, WIDTHS, lambda _o: net(x), lambda o, _f: F.l1_loss(o, y), mse_distill,
                  backward=lambda loss: loss.backward(), sync_context=Sync)  # fmt: skip
    assert len(entered) == len(WIDTHS) - 1


def test_log_keys_are_the_same_for_every_trainer() -> None:
    net, (x, y) = _net(), _batch()

    def distill(out: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mse = F.mse_loss(out, teacher)
        return 2 * mse, {"mse": mse}

    steps = [sandwich_step(net, WIDTHS, lambda _o: net(x), lambda o, _f: F.l1_loss(o, y), distill) for _ in range(2)]
    means = SandwichLog.of(*steps).means()
    assert set(means) == {"train/loss_full_width", "train/loss_w0.25", "train/loss_random_widths",
                          "train/distill_loss", "train/distill_mse"}  # fmt: skip
    assert means["train/distill_loss"] == pytest.approx(2 * means["train/distill_mse"])
    assert means["train/loss_full_width"] == pytest.approx(F.l1_loss(net(x), y).item(), rel=1e-6)
    one_width = SandwichLog.of(sandwich_step(net, [1.0], lambda _o: net(x), lambda o, _f: F.l1_loss(o, y), distill))
    assert set(one_width.means()) == {"train/loss_full_width"}


def test_random_widths() -> None:
    ws = random_widths(5, 0.25, 1.0, torch.Generator().manual_seed(0))
    assert len(ws) == 5 and all(0.25 <= w <= 1.0 for w in ws) and ws != sorted(ws, reverse=True)[:1] * 5
    assert ws == random_widths(5, 0.25, 1.0, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        random_widths(0, 0.25, 1.0)


def test_groups_split_the_total_into_the_full_width_and_the_students() -> None:
    net, (x, y) = _net(), _batch()
    own = lambda out, _first: F.l1_loss(out, y)  # noqa: E731
    step = sandwich_step(net, WIDTHS, lambda _o: net(x), own, mse_distill, student_weight=0.5)
    first, students = step.groups
    assert step.total is not None
    torch.testing.assert_close(first + students, step.total)
    torch.testing.assert_close(first, F.l1_loss(net(x), y))
    ran = sandwich_step(net, WIDTHS, lambda _o: net(x), own, sandwich=False)
    assert ran.groups == [ran.total]  # random widths have no teacher to set apart
    one = sandwich_step(net, [1.0], lambda _o: net(x), own, mse_distill)
    assert one.groups == [one.total]
    per_width = sandwich_step(net, WIDTHS, lambda _o: net(x), own, backward=lambda loss: loss.backward())
    assert per_width.groups == []


def test_backward_clipped_clips_the_first_loss_by_its_norm_and_the_others_at_most_as_much() -> None:
    net, (x, y) = _net(), _batch()
    params = list(net.parameters())
    # one loss: exactly backward + clip_grad_norm_
    F.l1_loss(net(x), y).backward()
    norm = float(torch.nn.utils.clip_grad_norm_(params, 0.05))
    expected = _grads(net)
    net.zero_grad()
    assert backward_clipped([F.l1_loss(net(x), y)], params, 0.05) == [pytest.approx(norm, rel=1e-6)]
    for name, grad in _grads(net).items():
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=0, msg=name)

    # losses sharing the graph of the first layer: the first clipped by its own norm, the others
    # by the same factor, or by their own where that is smaller
    def three() -> list[torch.Tensor]:
        hidden = net[1](net[0](x))
        out = net[4](net[3](net[2](hidden)))
        return [F.l1_loss(out, y), 1e-3 * F.l1_loss(out, -y), 100.0 * hidden.square().mean()]

    def norm_of(gs: tuple[torch.Tensor | None, ...]) -> float:
        return float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in gs if g is not None])))

    net.zero_grad()
    losses = three()
    grads = [torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) for loss in losses]
    n = [norm_of(g) for g in grads]
    c = 0.05 / (n[0] + 1e-6)
    assert c < 1 and n[1] * c < 0.05 and n[2] * c > 0.05  # the full width clipped; the first student at its factor
    scales = [c, c, 0.05 / (n[2] + 1e-6)]
    norms = backward_clipped(three(), params, 0.05)
    assert norms == [pytest.approx(v, rel=1e-5) for v in n]
    for k, p in enumerate(params):
        want = sum((g[k] * s for g, s in zip(grads, scales, strict=True) if g[k] is not None), torch.zeros_like(p))
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-9)
    # a first loss under max_norm is left alone, and so are the others up to max_norm
    net.zero_grad()
    backward_clipped([1e-4 * loss for loss in three()[:2]], params, 1e3)
    for k, p in enumerate(params):
        want = sum((1e-4 * g[k] for g in grads[:2] if g[k] is not None), torch.zeros_like(p))
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="at least one loss"):
        backward_clipped([], params, 1.0)


def test_backward_guarded_removes_only_the_students_component_that_raises_the_guard() -> None:
    net, (x, y) = _net(), _batch()
    params = list(net.parameters())

    def losses() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = net(x)
        # the "students" loss pushes every output up, the guard is the first two: they conflict
        return F.l1_loss(out, y), -out.mean(), out[:, :2].mean()

    def flat(gs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(gs, params, strict=True)])

    first, students, guard = losses()
    g_f, g_s, g_g = (flat(torch.autograd.grad(t, params, retain_graph=True)) for t in (first, students, guard))
    assert g_s @ g_g < 0  # descending the students' loss would raise the guard
    net.zero_grad()
    norms, changed = backward_guarded(*losses(), params, max_norm=1e6, joint=True)
    got = torch.cat([p.grad.flatten() for p in params])
    projected = g_s - (g_s @ g_g) / (g_g @ g_g) * g_g
    torch.testing.assert_close(got, g_f + projected, rtol=1e-5, atol=1e-7)
    assert changed and abs(float(projected @ g_g)) < 1e-5 * float(g_s.norm() * g_g.norm())
    assert norms == [pytest.approx(float((g_f + projected).norm()), rel=1e-5)]
    # no conflict (the guard's sign flipped): the gradients are left as they are, clipped apart as
    # backward_clipped clips them
    net.zero_grad()
    first, students, guard = losses()
    norms, changed = backward_guarded(first, students, -guard, params, max_norm=0.05, joint=False)
    guarded = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    first, students, _ = losses()
    assert norms == pytest.approx(backward_clipped([first, students], params, 0.05), rel=1e-6) and not changed
    for name, grad in _grads(net).items():
        torch.testing.assert_close(guarded[name], grad, rtol=1e-6, atol=1e-9, msg=name)
