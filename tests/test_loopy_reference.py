"""The loopy families on ln.Loop + PerPass compute what they computed on the former PassLoop (float64).

The reference is the former construction, kept private to this file: a loop class with a list of
per-pass bodies and feedback modules (`RefPassLoop`) and the builders that used it. Each family is
built both ways from the same seed; outputs, gradients and BN running statistics must be equal, and
the reference's state dict (the old keys) must load into today's model.
"""

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets import loopy as L
from loopnets.models.loopy.network import upgrade_pass_loop_keys

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)

MERGES = {"add": torch.add, "mul": torch.mul, "mean": lambda a, b: (a + b) / 2}
TINY = dict(in_channels=3, classes=4, image_size=6, filters=(5, 4))


# -- the former construction ---------------------------------------------------------------------


class RefPassLoop(nn.Module):
    """Pass t (1-based) runs bodies[min(t, n) - 1]; the loop-back after pass t runs feedbacks[min(t, m) - 1]."""

    def __init__(self, bodies, unroll, merge, feedbacks=None):
        super().__init__()
        self.bodies = nn.ModuleList(bodies)
        self.feedbacks = None if feedbacks is None else nn.ModuleList(feedbacks)
        self.unroll, self.merge = unroll, merge

    def forward(self, x):
        h = None
        for t in range(self.unroll):
            if t == 0:
                v = x
            else:
                fed = h if self.feedbacks is None else self.feedbacks[min(t, len(self.feedbacks)) - 1](h)
                v = MERGES[self.merge](fed, x)
            h = self.bodies[min(t, len(self.bodies) - 1)](v)
        return h


class RefCNN(nn.Module):
    def __init__(self, features, head):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def glorot_(m):
    with torch.no_grad():
        nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(m.bias)
    return m


def block(conv):
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(conv.out_channels), relu=nn.ReLU()))


def stack(channels, convs=None):
    if convs is None:
        convs = [glorot_(nn.Conv2d(a, b, 3, padding=1)) for a, b in zip(channels[:-1], channels[1:])]
    return nn.Sequential(OrderedDict((f"conv{i + 1}", block(c)) for i, c in enumerate(convs)))


def ref_model(family, unroll, in_channels=3, classes=4, image_size=6, filters=(5, 4), merge="add"):
    """The former builders with batch norm and Glorot init: loopy (per-unroll BN), deep, loop_layer."""
    c, (f1, f2) = in_channels, filters
    channels = (c, f1, f2) if family == "loop_layer" else (c, f1, f2, c)
    first = stack(channels)
    if family == "deep":
        bodies = [first] + [stack(channels) for _ in range(unroll - 1)]
    else:  # tied convs, a BN per pass
        bodies = [first] + [stack(channels, convs=[b.conv for b in first]) for _ in range(unroll - 1)]
    feedbacks = None
    if family == "loop_layer":
        loop_conv = glorot_(nn.Conv2d(f2, c, 3, padding=1))
        feedbacks = [block(loop_conv)] + [block(loop_conv) for _ in range(unroll - 2)]
    head = glorot_(nn.Linear(channels[-1] * image_size * image_size, classes))
    return RefCNN(RefPassLoop(bodies, unroll, merge, feedbacks), head)


def ref_deep_from(model):
    f = model.features
    k = f.unroll
    bodies = [copy.deepcopy(f.bodies[min(t, len(f.bodies) - 1)]) for t in range(k)]
    feedbacks = None
    if f.feedbacks is not None:
        feedbacks = [copy.deepcopy(f.feedbacks[min(t, len(f.feedbacks) - 1)]) for t in range(max(k - 1, 1))]
    return RefCNN(RefPassLoop(bodies, k, f.merge, feedbacks), copy.deepcopy(model.head))


CASES = {  # name -> (reference builder, today's builder, image channels, image size)
    "loopy": (lambda k: ref_model("loopy", k, **TINY), lambda k: L.loopy(**TINY, unroll=k), 3, 6),
    "deep": (lambda k: ref_model("deep", k, **TINY), lambda k: L.deep(**TINY, unroll=k), 3, 6),
    "plus_layer": (lambda k: ref_model("loop_layer", k, **TINY), lambda k: L.plus_layer(**TINY, unroll=k), 3, 6),
    "times_layer": (lambda k: ref_model("loop_layer", k, merge="mul", **TINY),
                    lambda k: L.times_layer(**TINY, unroll=k), 3, 6),
    "loop_layer mean": (lambda k: ref_model("loop_layer", k, merge="mean", **TINY),
                        lambda k: L.loop_layer(**TINY, unroll=k, merge="mean"), 3, 6),
    "mnist_loopy": (lambda k: ref_model("loopy", k, 1, 10, 28, (16, 8)), lambda k: L.mnist_loopy(unroll=k), 1, 28),
}


def bns_in_call_order(model, x):
    """The BN modules one forward call runs, in the order it runs them (pass by pass, layer by layer)."""
    called = []
    hooks = [m.register_forward_pre_hook(lambda m, _: called.append(m))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return called


def randomise_bn_(ref, new, x):
    """The same non-trivial BN values in the BN each model runs at the same point of its forward
    (found by running them, so independently of how either model stores its BNs)."""
    order_ref, order_new = bns_in_call_order(ref, x), bns_in_call_order(new, x)
    assert len(order_ref) == len(order_new) > 0
    for a, b in zip(order_ref, order_new):
        values = [torch.rand(a.num_features) for _ in range(4)]
        with torch.no_grad():
            for bn in (a, b):
                bn.weight.copy_(0.5 + values[0]), bn.bias.copy_(0.4 * values[1] - 0.2)
                bn.running_mean.copy_(0.6 * values[2] - 0.3), bn.running_var.copy_(0.5 + 1.5 * values[3])


def renamed(old: dict, model) -> dict:
    """`old` (keys of the reference) under today's keys, as loading renames them."""
    new = dict(old)
    upgrade_pass_loop_keys(model, new, "")
    return new


def assert_same(ref, new, x):
    """Equal outputs, parameter gradients and BN running statistics (after the forward)."""
    out_ref, out_new = ref(x), new(x)
    torch.testing.assert_close(out_new, out_ref, rtol=0, atol=1e-12)
    out_ref.square().sum().backward()
    out_new.square().sum().backward()
    grads_ref = renamed({n: p.grad for n, p in ref.named_parameters()}, new)
    grads_new = {n: p.grad for n, p in new.named_parameters()}
    assert sorted(grads_new) == sorted(grads_ref)
    for name, g in grads_new.items():
        if g is None or grads_ref[name] is None:
            assert g is None and grads_ref[name] is None, name
        else:
            torch.testing.assert_close(g, grads_ref[name], rtol=0, atol=1e-12, msg=name)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_new.values())
    state_ref = renamed(ref.state_dict(), new)
    for name, value in new.state_dict().items():
        torch.testing.assert_close(value, state_ref[name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("unroll", [1, 3])
@pytest.mark.parametrize("family", sorted(CASES))
def test_family_equals_the_former_passloop_construction(family, unroll, mode):
    build_ref, build_new, channels, size = CASES[family]
    torch.manual_seed(7)
    ref = build_ref(unroll)
    torch.manual_seed(7)
    new = build_new(unroll)
    assert isinstance(new.features, ln.Loop)
    x = torch.rand(2, channels, size, size)
    randomise_bn_(ref, new, x)
    ref.train(mode == "train"), new.train(mode == "train")
    assert_same(ref, new, x)


@pytest.mark.parametrize("family", ["loopy", "plus_layer", "times_layer"])
def test_deep_from_loopy_equals_the_former_construction(family):
    build_ref, build_new, channels, size = CASES[family]
    torch.manual_seed(3)
    ref = build_ref(3)
    torch.manual_seed(3)
    new = build_new(3)
    x = torch.rand(2, channels, size, size)
    randomise_bn_(ref, new, x)
    deep_ref, deep_new = ref_deep_from(ref).train(), L.deep_from_loopy(new).train()
    assert isinstance(deep_new.features.body, ln.PerPass)
    assert_same(deep_ref, deep_new, x)


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_state_dict_saved_with_passloop_keys_loads(family):
    build_ref, build_new, channels, size = CASES[family]
    x = torch.rand(2, channels, size, size)
    torch.manual_seed(5)
    ref = build_ref(3)
    randomise_bn_(ref, build_ref(3), x)
    ref.eval()
    old = ref.state_dict()
    assert any(k.startswith("features.bodies.") for k in old)
    new = build_new(3).eval()  # other weights (the seed moved on)
    assert not torch.allclose(new(x), ref(x), atol=1e-3)
    new.load_state_dict(old)  # strict: every key found, none left over
    torch.testing.assert_close(new(x), ref(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["loopy", "times_layer"])
def test_a_checkpoint_saved_with_passloop_keys_loads_through_ln_load(family, tmp_path):
    """ln.load(path, model=...) checks the file's names before loading: the model's key-upgrade hook counts."""
    build_ref, build_new, channels, size = CASES[family]
    x = torch.rand(2, channels, size, size)
    torch.manual_seed(5)
    ref = build_ref(3).eval()
    ln.save(ref, tmp_path / "old.lnet")
    new = build_new(3).eval()
    assert not torch.allclose(new(x), ref(x), atol=1e-3)
    assert ln.load(tmp_path / "old.lnet", model=new) is new
    torch.testing.assert_close(new(x), ref(x), rtol=0, atol=1e-12)
    other = CASES["times_layer" if family == "loopy" else "loopy"][1](3)  # another family: still refused
    with pytest.raises(ln.CheckpointError, match="architecture mismatch"):
        ln.load(tmp_path / "old.lnet", model=other)


def test_passloop_keeps_its_constructor_and_loads_its_old_keys():
    bodies = [nn.Sequential(nn.Linear(3, 3), nn.Tanh()), nn.Sequential(nn.Linear(3, 3), nn.Tanh())]
    feedbacks = [nn.Linear(3, 3)]
    loop = L.PassLoop(bodies, unroll=3, merge="add", feedbacks=feedbacks)
    ref = RefPassLoop(bodies, 3, "add", feedbacks)
    assert isinstance(loop, ln.Loop) and isinstance(loop.body, ln.PerPass) and loop.feedback is feedbacks[0]
    x = torch.randn(4, 3)
    torch.testing.assert_close(loop(x), ref(x), rtol=0, atol=1e-12)
    fresh = L.PassLoop([nn.Sequential(nn.Linear(3, 3), nn.Tanh()) for _ in range(2)], unroll=3, merge="add",
                       feedbacks=[nn.Linear(3, 3)])
    fresh.load_state_dict(ref.state_dict())
    torch.testing.assert_close(fresh(x), ref(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="1..unroll=2 bodies"):
        L.PassLoop(bodies * 2, unroll=2)
    with pytest.raises(ValueError, match="feedback modules"):
        L.PassLoop(bodies, unroll=2, feedbacks=feedbacks * 2)
