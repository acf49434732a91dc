"""Invariants of the pure-PyTorch core on tiny tensors."""

import pytest
import torch
import torch.nn.functional as F

from metaray.core import (
    InnerConfig,
    SoftPrompt,
    TaskUpdate,
    adapt,
    fit_linear_probe,
    leave_one_out_loss,
    make_outer_optimizer,
    mean_pseudo_gradient,
    outer_step,
    partial_sum,
    prototypes,
    query_gradient,
    query_objective,
    reptile_pseudo_gradient,
    ridge_head,
    ridge_leave_one_out_loss,
    task_pseudo_gradient,
)

P, D = 3, 5


def quadratic_loss(target):
    def loss(params, step):
        return ((params["prompt"] - target) ** 2).sum()

    return loss


def test_adapt_leaves_theta_untouched():
    theta = torch.randn(P, D)
    before = theta.clone()
    result = adapt({"prompt": theta}, quadratic_loss(torch.ones(P, D)), InnerConfig(steps=5, lr=0.1, optimizer="sgd"))
    assert torch.equal(theta, before)
    assert not torch.equal(result.adapted_prompt, theta)
    assert len(result.losses) == 5 and result.losses[-1] < result.losses[0]


def test_adapt_calls_on_step_at_every_budget():
    seen = []
    adapt(
        {"prompt": torch.zeros(P, D)},
        quadratic_loss(torch.ones(P, D)),
        InnerConfig(steps=3),
        lambda i, p: seen.append(i),
    )
    assert seen == [0, 1, 2, 3]


def test_reptile_one_task_outer_lr_one_gives_phi():
    theta = torch.randn(P, D)
    phi = adapt({"prompt": theta}, quadratic_loss(torch.ones(P, D)), InnerConfig(steps=4, lr=0.1)).adapted_prompt
    meta_prompt = torch.nn.Parameter(theta.clone())
    optimizer = make_outer_optimizer(meta_prompt, "sgd", lr=1.0)
    outer_step(meta_prompt, optimizer, mean_pseudo_gradient([reptile_pseudo_gradient(theta, phi)]))
    torch.testing.assert_close(meta_prompt.detach(), phi, rtol=0, atol=1e-7)


def test_fomaml_pseudo_gradient_is_query_gradient_at_phi():
    torch.manual_seed(0)
    w = torch.randn(D, 2)
    x, y = torch.randn(4, P, D), torch.tensor([0, 1, 1, 0])

    def query_loss(prompt):
        return F.cross_entropy((x + prompt).mean(1) @ w, y)

    phi = torch.randn(P, D)
    grad, loss = query_gradient(phi, query_loss)
    ref = phi.clone().requires_grad_(True)
    expected = torch.autograd.grad(query_loss(ref), ref)[0]
    torch.testing.assert_close(grad, expected)
    assert loss == pytest.approx(float(query_loss(phi)))


def task_losses():
    """A support loss pulling the prompt to 1 and a query loss pulling it to 2: closed forms."""
    support = quadratic_loss(torch.ones(P, D))

    def query(prompt):
        return ((prompt - 2) ** 2).sum()

    return support, query


def test_task_pseudo_gradient_of_each_algorithm():
    """One function of core per task: θ − φ (reptile), ∇L_query(φ) (fomaml), ∇L_query(θ)
    (multitask), with φ = θ after `inner.steps` SGD steps on the support loss."""
    theta, inner = torch.zeros(P, D), InnerConfig(steps=2, lr=0.25, optimizer="sgd")
    support, query = task_losses()
    phi = torch.full((P, D), 0.75)  # 0 -> 0.5 -> 0.75: each step halves the distance to 1
    reptile = task_pseudo_gradient("reptile", theta, support, query, inner)
    torch.testing.assert_close(reptile.pseudo_grad, theta - phi)
    assert reptile.support_loss == pytest.approx((P * D * 1.0 + P * D * 0.25) / 2)  # mean loss before each step
    assert reptile.query_loss == pytest.approx(float(query(phi)))
    fomaml = task_pseudo_gradient("fomaml", theta, support, query, inner)
    torch.testing.assert_close(fomaml.pseudo_grad, 2 * (phi - 2))
    multitask = task_pseudo_gradient("multitask", theta, support, query, inner)
    torch.testing.assert_close(multitask.pseudo_grad, 2 * (theta - 2))
    assert multitask.support_loss == multitask.query_loss == pytest.approx(float(query(theta)))
    with pytest.raises(ValueError, match="must be one of"):
        task_pseudo_gradient("maml", theta, support, query, inner)


def test_mean_pseudo_gradient_is_the_mean_over_tasks():
    grads = [torch.full((P, D), v) for v in (1.0, 2.0, 6.0)]
    torch.testing.assert_close(mean_pseudo_gradient(grads), torch.full((P, D), 3.0))
    with pytest.raises(ValueError, match="at least one"):
        mean_pseudo_gradient([])
    with pytest.raises(ValueError, match="shape"):
        mean_pseudo_gradient([torch.zeros(2, 2), torch.zeros(3, 2)])


def test_soft_prompt_inits_are_deterministic_and_shaped():
    table = torch.randn(50, D)
    a = SoftPrompt.from_vocab(P, table, torch.Generator().manual_seed(1)).weight
    b = SoftPrompt.from_vocab(P, table, torch.Generator().manual_seed(1)).weight
    assert a.shape == (P, D) and torch.equal(a, b)
    assert all(any(torch.equal(row, t) for t in table) for row in a)
    text = SoftPrompt.from_text(5, table, [7, 9]).weight
    assert torch.equal(text[0], table[7]) and torch.equal(text[3], table[9])
    assert SoftPrompt.random(P, table, torch.Generator().manual_seed(0)).weight.shape == (P, D)
    assert SoftPrompt(torch.zeros(P, D))(batch_size=4).shape == (4, P, D)
    with pytest.raises(ValueError):
        SoftPrompt.from_text(P, table, [])


def test_leave_one_out_loss_matches_a_loop():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(7, D), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    expected = []
    for i in range(7):
        protos = []
        for c in range(3):
            members = [j for j in range(7) if labels[j] == c and not (j == i and (labels == c).sum() > 1)]
            protos.append(F.normalize(emb[members].mean(0), dim=-1))
        logits = 10.0 * emb[i] @ torch.stack(protos).T
        expected.append(F.cross_entropy(logits.unsqueeze(0), labels[i : i + 1]))
    torch.testing.assert_close(leave_one_out_loss(emb, labels, 3, 10.0), torch.stack(expected).mean())


def test_prototypes_are_normalised_class_means():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    protos = prototypes(emb, torch.tensor([0, 1, 1]), 2)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_linear_probe_separates_separable_data():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 16), dim=-1)
    labels = torch.arange(4).repeat_interleave(5)
    emb = F.normalize(centres[labels] + 0.3 * torch.randn(20, 16), dim=-1)
    head = fit_linear_probe(emb, labels, 4, scale=20.0)
    assert (head.logits(emb).argmax(-1) == labels).all()


@pytest.mark.parametrize("bad", [{"steps": -1}, {"lr": 0.0}, {"optimizer": "rmsprop"}, {"batch_ways": 1}])
def test_inner_config_refuses_bad_values(bad):
    with pytest.raises(ValueError):
        InnerConfig(**bad)


def test_partial_sums_give_the_flat_mean_for_any_grouping():
    """The aggregation tree's arithmetic: per-node sums, then the root's mean, equal the
    flat mean of the same tasks bit for bit, whatever the grouping and order."""
    torch.manual_seed(0)
    updates = [TaskUpdate(torch.randn(4, 8), float(i), 2.0 * i) for i in range(7)]
    flat = mean_pseudo_gradient([u.pseudo_grad for u in updates])
    for groups in ([[0, 1, 2], [3, 4, 5, 6]], [[6, 0], [5], [1, 2, 3, 4]], [[i] for i in range(7)]):
        total = partial_sum([partial_sum([updates[i] for i in group]) for group in groups])
        assert total.tasks == 7 and total.support_loss_sum == 21.0 and total.query_loss_sum == 42.0
        assert torch.equal(total.mean(), flat)  # float64 sums of float32 values: exact
    with pytest.raises(ValueError, match="at least one"):
        partial_sum([])
    with pytest.raises(ValueError, match="disagree in shape"):
        partial_sum([updates[0], TaskUpdate(torch.zeros(3, 8), 0.0, 0.0)])


def test_the_ridge_head_is_the_ridge_regression_of_one_hot_targets():
    """R2-D2's Woodbury form Xᵀ(XXᵀ + λI)⁻¹Y (an N x N solve) equals the primal ridge
    solution (XᵀX + λI)⁻¹XᵀY (a D x D solve), and with a small penalty it fits the support."""
    gen = torch.Generator().manual_seed(0)
    x, labels, lam = torch.randn(6, 10, generator=gen, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2]), 0.5
    y = F.one_hot(labels, 3).double()
    primal = torch.linalg.solve(x.T @ x + lam * torch.eye(10, dtype=torch.float64), x.T @ y)
    torch.testing.assert_close(ridge_head(x, labels, 3, lam), primal)
    assert torch.equal((x @ ridge_head(x, labels, 3, 1e-6)).argmax(-1), labels)
    with pytest.raises(ValueError, match="> 0"):
        ridge_head(x, labels, 3, 0.0)


def test_the_head_matched_gradient_reaches_theta_through_the_fitted_head():
    """r2d2's g = ∇_θ L_query(θ) with the head fitted on the support under θ: the same as
    autograd through the closed-form fit, and not the gradient with the head held fixed."""
    gen = torch.Generator().manual_seed(1)
    base_s, base_q = torch.randn(6, D, generator=gen), torch.randn(6, D, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])

    def loss(prompt, detach_head=False):
        support, query = F.normalize(base_s + prompt.sum(0), dim=-1), F.normalize(base_q + prompt.sum(0), dim=-1)
        head = ridge_head(support, labels, 3, 1.0)
        return F.cross_entropy(10 * query @ (head.detach() if detach_head else head), labels)

    theta = torch.randn(P, D, generator=gen)
    update = task_pseudo_gradient("r2d2", theta, lambda params, step: loss(params["prompt"]), loss, InnerConfig())
    ref = theta.clone().requires_grad_(True)
    torch.testing.assert_close(update.pseudo_grad, torch.autograd.grad(loss(ref), ref)[0])
    fixed = theta.clone().requires_grad_(True)
    assert not torch.allclose(update.pseudo_grad, torch.autograd.grad(loss(fixed, True), fixed)[0], atol=1e-4)
    assert query_objective("r2d2").head == "ridge" and query_objective("fomaml").head == "proto"


def test_the_ridge_leave_one_out_loss_is_the_loss_of_refits_without_each_example():
    """The closed-form LOO identity against N explicit refits of the ridge head."""
    gen = torch.Generator().manual_seed(2)
    x, labels, lam, scale = (
        torch.randn(6, 10, generator=gen, dtype=torch.float64),
        torch.tensor([0, 0, 1, 1, 2, 2]),
        0.7,
        5.0,
    )
    rows = []
    for i in range(6):
        keep = [j for j in range(6) if j != i]
        rows.append(x[i] @ ridge_head(x[keep], labels[keep], 3, lam))
    expected = F.cross_entropy(scale * torch.stack(rows), labels)
    torch.testing.assert_close(ridge_leave_one_out_loss(x, labels, 3, lam, scale), expected)
