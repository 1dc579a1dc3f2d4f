"""Loop(merge="concat"): DeepThinking's recall, project(cat(feedback(h), x)) along dim 1, against its formula."""

import pytest
import torch
from torch import nn

import loopnets as ln

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


def test_concat_forward_and_gradient_match_the_formula():
    body, project = nn.Sequential(nn.Linear(3, 3), nn.Tanh()), nn.Linear(6, 3)
    loop = ln.Loop(body, unroll=3, merge="concat", project=project)
    x = torch.randn(4, 3, requires_grad=True)
    G = torch.randn(4, 3)
    (loop(x) * G).sum().backward()

    # The formula on independent copies: h1 = f(x), h_t = f(P [h_{t-1}; x]).
    W, b = (p.detach().clone().requires_grad_() for p in (body[0].weight, body[0].bias))
    P, c = (p.detach().clone().requires_grad_() for p in (project.weight, project.bias))
    x2 = x.detach().clone().requires_grad_()
    f = lambda v: torch.tanh(v @ W.T + b)  # noqa: E731
    h = f(x2)
    for _ in range(2):
        h = f(torch.cat([h, x2], dim=1) @ P.T + c)
    (h * G).sum().backward()
    torch.testing.assert_close(loop(x), h, rtol=1e-12, atol=1e-12)
    for got, want in ((body[0].weight, W), (body[0].bias, b), (project.weight, P), (project.bias, c)):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-12)
    assert sum(1 for p in loop.parameters() if p is project.weight) == 1  # one projection, shared by every pass


def test_concat_on_conv_states_concatenates_channels_and_differs_from_add():
    C = 4
    body = nn.Sequential(nn.Conv1d(C, C, 3, padding=1), nn.ReLU())
    project = nn.Conv1d(2 * C, C, 3, padding=1)
    loop = ln.Loop(body, unroll=2, merge="concat", project=project)
    x = torch.randn(2, C, 10)
    want = body(project(torch.cat([body(x), x], dim=1)))
    torch.testing.assert_close(loop(x), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(loop(x), ln.Loop(body, unroll=2, merge="add")(x))
    # the pass outputs, early exit and compact see the same passes
    torch.testing.assert_close(loop.passes(x)[-1], want)
    torch.testing.assert_close(ln.early_exit(loop, x, threshold=0.0).output, want)
    torch.testing.assert_close(loop.compact()(x), want)


def test_concat_width_mismatch_names_both_widths_and_the_fix():
    body = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    with pytest.raises(ValueError, match=r"to width 6, but the projection takes width 5; build the projection with 6 "
                                         r"input channels"):
        ln.Loop(body, merge="concat", project=nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"the projection returns width 4 but the body takes width 3; build the "
                                         r"projection with 3 output"):
        ln.Loop(body, merge="concat", project=nn.Linear(6, 4))
    with pytest.raises(ValueError, match=r"merge='concat' needs a projection .* pass project=, e.g. nn.Conv1d\(2 \* C"):
        ln.Loop(body, merge="concat")
    with pytest.raises(ValueError, match=r"project=...\) is the projection of merge='concat'; with merge='add'"):
        ln.Loop(body, merge="add", project=nn.Linear(6, 3))
    with pytest.raises(ValueError, match="COMBINE does not support merge='concat' with a projection that has parameters"):
        ln.Loop(body, merge="concat", project=nn.Linear(6, 3), backprop=ln.Combine())


def test_concat_widths_undeclared_until_data_flows_are_checked_at_the_first_pass():
    # A body and projection that declare no widths: the concatenation is checked when it runs.
    class Halve(nn.Module):  # (B, 2C) -> (B, C): keeps the first half
        def forward(self, v):
            return v[:, : v.shape[1] // 2]

    loop = ln.Loop(nn.Tanh(), unroll=3, merge="concat", project=Halve())
    x = torch.randn(2, 3)
    torch.testing.assert_close(loop(x), torch.tanh(torch.tanh(torch.tanh(x))))  # Halve keeps h: no recall at all

    class Identity(nn.Module):
        def forward(self, v):
            return v

    with pytest.raises(ValueError, match=r"the projection of the concatenation \(Loop\(project=...\)\) is \(2, 6\)"):
        ln.Loop(nn.Tanh(), unroll=2, merge="concat", project=Identity())(x)
    # a projection that declares its width while the body does not: the runtime check names the widths
    loop = ln.Loop(nn.Tanh(), unroll=2, merge="concat", project=nn.Linear(8, 3))
    with pytest.raises(ValueError, match="width 3 and the loop input width 3, together 6, but the projection takes width 8"):
        loop(x)
