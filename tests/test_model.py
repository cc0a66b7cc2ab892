"""The two-column AlexNet: sizes, LRN, equivalence with the grouped form, init, PaperSGD."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference import count_parameters, to_two_column
from training.model import (
    AlexNet,
    AlexNetConfig,
    GroupedAlexNet,
    OneGpuAlexNet,
    default_devices,
    local_response_norm,
    to_grouped,
)
from training.optim import PaperSGD


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test from the same seed, whatever ran before it (not once, at import)."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def full():
    return AlexNet()


def test_parameter_count(full):
    assert count_parameters(full) == 60_965_224
    assert count_parameters(GroupedAlexNet()) == 60_965_224
    assert (
        count_parameters(GroupedAlexNet(AlexNetConfig(columns=1))) == 62_378_344
    )  # Caffe's ungrouped AlexNet


def test_intermediate_shapes(full):
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = tuple(output.shape)

        return hook

    col = full.columns[0]
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        getattr(col, name)[0].register_forward_hook(record(f"{name}"))
        getattr(col, name).register_forward_hook(record(f"{name}-block"))
    for name in ("fc6", "fc7", "fc8"):
        getattr(col, name).register_forward_hook(record(name))
    full.eval()
    with torch.no_grad():
        logits = full(torch.randn(2, 3, 227, 227))
    assert logits.shape == (2, 1000)
    assert shapes["conv1"] == (2, 48, 55, 55) and shapes["conv1-block"] == (2, 48, 27, 27)
    assert shapes["conv2"] == (2, 128, 27, 27) and shapes["conv2-block"] == (2, 128, 13, 13)
    assert shapes["conv3"] == (2, 192, 13, 13)
    assert shapes["conv4"] == (2, 192, 13, 13)
    assert shapes["conv5"] == (2, 128, 13, 13) and shapes["conv5-block"] == (2, 128, 6, 6)
    assert shapes["fc6"] == (2, 2048) and shapes["fc7"] == (2, 2048) and shapes["fc8"] == (2, 500)
    assert col.conv3[0].in_channels == 256 and col.conv4[0].in_channels == 192
    assert col.fc6.in_features == 9216 and col.fc7.in_features == 4096


def lrn_reference(a: np.ndarray, n=5, alpha=1e-4, beta=0.75, k=2.0) -> np.ndarray:
    """The paper's formula, written out with loops over channels."""
    channels = a.shape[1]
    b = np.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(axis=1)
        b[:, i] = a[:, i] / (k + alpha * s) ** beta
    return b


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 7, 48])
def test_lrn_is_the_papers_formula(channels):
    rng = np.random.default_rng(channels)
    a = rng.uniform(0, 300, (2, channels, 4, 3))  # ReLU outputs: positive, large enough to matter
    got = local_response_norm(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, lrn_reference(a), rtol=1e-12)
    # the "divided" convention is torch's own LocalResponseNorm
    torch_lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(torch_lrn, lrn_reference(a, alpha=1e-4 / 5), rtol=1e-10)


def _rescale(model: nn.Module) -> None:
    """Weights large enough for logits of order 1 (N(0, 0.01) makes them tiny)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * (2 / fan_in) ** 0.5)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"lrn": "divided", "width": 0.25},
        {"remove_conv": "conv3", "width": 0.25},
        {"norm": "batch", "lrn": "none", "width": 0.25},
        {"norm": "batch", "lrn": "none", "width": 0.25, "centre_images": True},
    ],
)
def test_two_column_and_grouped_forms_agree(settings):
    two = AlexNet(AlexNetConfig(num_classes=10, **settings))
    _rescale(two)
    if two.config.norm == "batch":  # BatchNorm's running statistics: away from 0 and 1
        with torch.no_grad():
            two.train()
            two(torch.randn(4, 3, 227, 227) * 3 + 1)
    grouped = GroupedAlexNet(AlexNetConfig(num_classes=10, **settings))
    grouped.load_state_dict(to_grouped(two.state_dict()))
    two.eval()
    grouped.eval()
    x = torch.randn(3, 3, 227, 227)
    y = torch.tensor([1, 5, 9])
    la, lb = two(x), grouped(x)
    assert la.abs().max() > 0.1  # a meaningful comparison
    assert (la - lb).abs().max() < 1e-5 * max(1.0, la.abs().max().item())  # float32's
    nn.functional.cross_entropy(la, y).backward()
    nn.functional.cross_entropy(lb, y).backward()
    grads_two = to_grouped({k: p.grad for k, p in two.named_parameters()})
    for name, p in grouped.named_parameters():
        scale = p.grad.abs().max().item() + 1e-12
        assert (grads_two[name] - p.grad).abs().max().item() / scale < 1e-4, name


def test_weight_conversion_is_lossless(full):
    state = full.state_dict()
    back = to_two_column(to_grouped(state), full.config)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    grouped = GroupedAlexNet()
    g = grouped.state_dict()
    again = to_grouped(to_two_column(g, grouped.config))
    assert all(torch.equal(again[k], g[k]) for k in g)


def test_batch_norm_sits_after_every_conv_and_fc6_fc7():
    config = AlexNetConfig(num_classes=5, width=0.125, norm="batch")
    for net in (AlexNet(config), GroupedAlexNet(config)):
        layers = net.columns[0] if isinstance(net, AlexNet) else net
        for name in config.convs:
            block = getattr(layers, name)
            assert isinstance(block[1], nn.BatchNorm2d), name
            assert block[1].num_features == block[0].out_channels, name
        for name in ("fc6", "fc7"):
            norm = getattr(layers, f"{name}_norm")
            assert isinstance(norm, nn.BatchNorm1d), name
            assert norm.num_features == getattr(layers, name).out_features, name
    state = AlexNet(config).state_dict()  # with the statistics: a lossless conversion too
    back = to_two_column(to_grouped(state), config)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    net = AlexNet(config).train()  # a batch of one image (a worker's last) trains too
    nn.functional.cross_entropy(net(torch.randn(1, 3, 227, 227)), torch.tensor([3])).backward()
    assert net.columns[0].conv1[0].weight.grad.abs().sum() > 0
    plain = AlexNet(dataclasses.replace(config, norm="none")).state_dict()
    assert not any("norm" in k or "running" in k for k in plain)  # old checkpoints still load


def test_centred_images_ignore_a_shift_of_each_image_colour():
    x = torch.rand(3, 3, 227, 227) * 255 - 128
    shift = torch.tensor([[40.0, -25.0, 10.0], [-60.0, 5.0, 90.0], [0.0, 0.0, -70.0]])
    shifted = x + shift[:, :, None, None]  # a different colour cast per image
    for centre in (True, False):
        config = AlexNetConfig(num_classes=6, width=0.125, centre_images=centre)
        for cls in (AlexNet, GroupedAlexNet, OneGpuAlexNet):
            net = cls(config)
            _rescale(net)
            net.eval()
            with torch.no_grad():
                a, b = net(x), net(shifted)
            assert a.abs().max() > 0.1, cls.__name__
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4) == centre, (cls.__name__, centre)
            if centre:  # the whole crop's mean, per image and channel, and nothing more
                plain = cls(dataclasses.replace(config, centre_images=False))
                plain.load_state_dict(net.state_dict())
                plain.eval()
                with torch.no_grad():
                    want = plain(x - x.mean((2, 3), keepdim=True))
                assert torch.allclose(a, want, rtol=1e-4, atol=1e-4), cls.__name__


def test_initialisation_as_the_paper(full):
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        for column in full.columns:
            layer = getattr(column, name)
            layer = layer[0] if isinstance(layer, nn.Sequential) else layer
            assert abs(layer.weight.std().item() - 0.01) < 0.0005, name
            assert abs(layer.weight.mean().item()) < 0.001, name
            expected = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
            assert torch.all(layer.bias == expected), name


@pytest.mark.parametrize(
    "settings",
    [
        {"activation": "tanh"},
        {"lrn": "none"},
        {"pool": "non-overlapping"},
        {"dropout": 0.0},
        {"width": 0.5},
        {"remove_conv": "conv3"},
        {"remove_conv": "conv4"},
        {"remove_conv": "conv5"},
    ],
)
def test_ablations_build_and_run(settings):
    model = AlexNet(AlexNetConfig(num_classes=7, width=settings.pop("width", 0.125), **settings))
    assert model(torch.randn(2, 3, 227, 227)).shape == (2, 7)
    grouped = GroupedAlexNet(model.config)
    grouped.load_state_dict(to_grouped(model.state_dict()))


def test_ablation_settings_do_what_they_say():
    def tiny(**settings):
        return AlexNet(AlexNetConfig(width=0.125, **settings))

    assert isinstance(tiny(activation="tanh").columns[0].act, nn.Tanh)
    assert tiny(pool="non-overlapping").columns[0].conv1[-1].kernel_size == 2
    assert not any(
        isinstance(m, nn.Module) and m.__class__.__name__ == "LRN"
        for m in tiny(lrn="none").modules()
    )
    assert not hasattr(tiny(remove_conv="conv4").columns[0], "conv4")
    assert AlexNet(AlexNetConfig(width=0.5)).columns[0].conv1[0].out_channels == 24
    with pytest.raises(ValueError, match="lrn_size"):
        AlexNetConfig(lrn_size=4)


def test_default_devices_on_this_machine():
    n = torch.cuda.device_count()
    expected = {0: [torch.device("cpu")] * 2, 1: [torch.device("cuda", 0)] * 2}.get(
        n, [torch.device("cuda", 0), torch.device("cuda", 1)]
    )
    assert default_devices() == expected
    assert AlexNet(AlexNetConfig(width=0.125)).devices == expected


def test_default_devices_give_each_local_replica_its_own_gpus():
    def cuda(*ids: int) -> list[torch.device]:
        return [torch.device("cuda", i) for i in ids]

    assert default_devices(0, 1, n_gpus=2) == cuda(0, 1)  # the paper: a column per GPU
    assert default_devices(0, 1, n_gpus=1) == cuda(0, 0)
    assert [default_devices(r, 4, n_gpus=8) for r in range(4)] == [
        cuda(0, 1),
        cuda(2, 3),
        cuda(4, 5),
        cuda(6, 7),
    ]
    assert [default_devices(r, 4, n_gpus=4) for r in range(4)] == [
        cuda(0, 0),
        cuda(1, 1),
        cuda(2, 2),
        cuda(3, 3),
    ]
    assert default_devices(1, 2, n_gpus=1) == [torch.device("cpu")] * 2


def test_columns_on_given_devices():
    model = AlexNet(AlexNetConfig(num_classes=4, width=0.125), devices=["cpu", "cpu"])
    assert all(p.device.type == "cpu" for p in model.parameters())
    with pytest.raises(ValueError, match="one device per column"):
        AlexNet(AlexNetConfig(width=0.125), devices=["cpu"])


# --- PaperSGD ------------------------------------------------------------------


def _run(opt_cls, lrs, **kw):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]).reshape(1, 3))  # a weight (ndim 2)
    b = torch.nn.Parameter(torch.tensor([0.5]))  # a bias
    opt = opt_cls([w, b], lr=lrs[0], momentum=0.9, weight_decay=5e-4, **kw)
    history = []
    for step, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        x = torch.tensor([1.0, 2.0, -1.0]) * (step + 1)
        loss = (w @ x).square().sum() + 3 * b.sum()
        loss.backward()
        opt.step()
        history.append((w.detach().clone(), b.detach().clone()))
    return history, opt


def _hand(lrs, decay_biases=False):
    """The paper's rule, by hand, in float64."""
    w, b = np.array([1.0, -2.0, 3.0]), np.array([0.5])
    vw, vb = np.zeros(3), np.zeros(1)
    out = []
    for step, lr in enumerate(lrs):
        x = np.array([1.0, 2.0, -1.0]) * (step + 1)
        gw, gb = 2 * (w @ x) * x, np.array([3.0])
        vw = 0.9 * vw - 5e-4 * lr * w - lr * gw
        vb = 0.9 * vb - (5e-4 * lr * b if decay_biases else 0) - lr * gb
        w, b = w + vw, b + vb
        out.append((w.copy(), b.copy()))
    return out


LRS = [0.01, 0.01, 0.01, 0.001, 0.001, 0.0001]  # two learning-rate changes


@pytest.mark.parametrize("decay_biases", [False, True])
def test_paper_sgd_equals_the_hand_computed_rule(decay_biases):
    got, _ = _run(PaperSGD, LRS, decay_biases=decay_biases)
    for (w, b), (hw, hb) in zip(got, _hand(LRS, decay_biases), strict=True):
        np.testing.assert_allclose(w.numpy().ravel(), hw, rtol=1e-5)
        np.testing.assert_allclose(b.numpy(), hb, rtol=1e-5)


def test_paper_sgd_differs_from_torch_sgd_after_a_rate_change():
    ours, _ = _run(PaperSGD, LRS, decay_biases=True)
    theirs, _ = _run(torch.optim.SGD, LRS)
    # identical while the rate is constant...
    for (w, b), (tw, tb) in zip(ours[:3], theirs[:3], strict=True):
        torch.testing.assert_close(w, tw)
        torch.testing.assert_close(b, tb)
    # ...and not after it changes
    assert (ours[3][0] - theirs[3][0]).abs().max() > 1e-4


def test_paper_sgd_state_dict_round_trip():
    _, opt = _run(PaperSGD, LRS[:2])
    state = opt.state_dict()
    w = torch.nn.Parameter(torch.zeros(1, 3))
    b = torch.nn.Parameter(torch.zeros(1))
    fresh = PaperSGD([w, b], lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == LRS[1]
    velocities = [fresh.state[p]["velocity"] for p in (w, b)]
    saved = [state["state"][i]["velocity"] for i in (0, 1)]
    assert all(
        torch.equal(v, s) and v.abs().sum() > 0 for v, s in zip(velocities, saved, strict=True)
    )


def test_the_prepared_gpu_check_runs(tmp_path):
    """benchmarks/gpu_check.py, every path on the CPU at a tiny size (no GPU here), importing
    nothing the GPU host lacks."""
    from tests.gpu_host import dry_run, missing_on_gpu_host

    result, imported = dry_run("gpu_check.py", tmp_path)
    assert "torch" in imported and not missing_on_gpu_host(imported)
    for entry in result["placement"].values():
        assert entry["max_abs_logit_diff"] < 1e-5 and entry["max_rel_grad_diff"] < 1e-4
    assert set(result["speed"]) == {"fp32", "bf16+channels_last"}
    for speed in result["speed"].values():  # the ratio is seconds over seconds: images/s inverted
        rate = speed["images_per_s"]
        ratio = rate["grouped"] / rate["two-column"]
        assert speed["ratio_two_column_over_grouped"] == pytest.approx(ratio, rel=0.05, abs=2e-3)


@pytest.mark.parametrize(("mode", "alpha"), [("paper", 1e-4), ("divided", 1e-4 / 5)])
def test_the_lrn_module_uses_each_modes_alpha_within_each_column(mode, alpha):
    from training.model import LRN, AlexNetConfig

    rng = np.random.default_rng(3)
    a = rng.uniform(0, 300, (2, 12, 3, 3))
    config = AlexNetConfig(lrn=mode)
    one = LRN(config)(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(one, lrn_reference(a, alpha=alpha), rtol=1e-12)
    two = LRN(config, groups=2)(torch.from_numpy(a)).numpy()  # each half on its own
    halves = [lrn_reference(a[:, :6], alpha=alpha), lrn_reference(a[:, 6:], alpha=alpha)]
    np.testing.assert_allclose(two, np.concatenate(halves, 1), rtol=1e-12)
    assert not np.allclose(two, one)  # the windows at the halves' edge differ


def test_columns_exchange_only_at_conv3_fc6_fc7_and_fc8():
    """Change one layer of column 1; what column 0 computes changes only from the next
    layer that reads both columns."""
    torch.manual_seed(0)
    model = AlexNet(AlexNetConfig(num_classes=10, width=0.125), devices=["cpu", "cpu"]).eval()
    _rescale(model)
    x = torch.randn(2, 3, 227, 227)
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]

    def column0() -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        hooks = [
            getattr(model.columns[0], name).register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, o.detach().clone())
            )
            for name in layers
        ]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        return seen

    before = column0()
    # where a change in column 1 first reaches column 0: conv3 reads both columns' conv2
    # maps, fc6 both conv5s, fc7 both fc6s, fc8 both fc7s; conv4 and conv5 their own only
    first_reader = {
        "conv1": "conv3",
        "conv2": "conv3",
        "conv3": "fc6",
        "conv4": "fc6",
        "conv5": "fc6",
        "fc6": "fc7",
        "fc7": "fc8",
    }
    for changed, reader in first_reader.items():
        module = getattr(model.columns[1], changed)
        weight = (module[0] if isinstance(module, nn.Sequential) else module).weight
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.mul_(1.5)
        after = column0()
        with torch.no_grad():
            weight.copy_(saved)
        for name in layers:
            same = torch.equal(after[name], before[name])
            assert same == (layers.index(name) < layers.index(reader)), (changed, name)


@pytest.mark.parametrize(
    ("settings", "count"),
    [
        ({}, 60_965_224),
        ({"lrn": "none"}, 60_965_224),
        ({"pool": "non-overlapping"}, 60_965_224),
        ({"activation": "tanh"}, 60_965_224),
        ({"remove_conv": "conv3"}, 59_858_920),
        ({"remove_conv": "conv4"}, 60_301_288),
        ({"remove_conv": "conv5"}, 79_396_968),
        ({"width": 0.5}, 16_277_160),
        ({"columns": 1}, 59_798_312),
    ],
)
def test_the_ablation_table_in_the_readme_counts_right(settings, count):
    from training.model import AlexNetConfig, build

    model = build(AlexNetConfig(**settings), ["cpu", "cpu"])
    assert sum(p.numel() for p in model.parameters()) == count
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{count:,}" in readme


def test_the_papers_numbers_are_the_defaults():
    """Issue 23: dropout 0.5 -> 0.4, 3x3/2 pooling -> 2x2/2 (every map size the same), the
    lighting sigma 0.1 -> 1.0 and the odd class split survived every test. Each number the
    paper gives, read from the defaults, the paper preset, and the built nets."""
    from training.architecture import CONV_SPEC, FC_WIDTH, INPUT_SIZE
    from training.config import TrainConfig, resolve

    m = AlexNetConfig()
    assert (m.num_classes, m.input_size, m.dropout, m.pool, m.activation) == (
        1000,
        227,
        0.5,
        "overlapping",
        "relu",
    )
    assert (m.lrn, m.lrn_size, m.lrn_alpha, m.lrn_beta, m.lrn_k) == ("paper", 5, 1e-4, 0.75, 2.0)
    assert INPUT_SIZE == 227 and FC_WIDTH == 2048  # 4096 units over the two columns
    assert CONV_SPEC == {  # per column: kernels, size, stride, padding, sees both columns
        "conv1": (48, 11, 4, 0, False),
        "conv2": (128, 5, 1, 2, False),
        "conv3": (192, 3, 1, 1, True),
        "conv4": (192, 3, 1, 1, False),
        "conv5": (128, 3, 1, 1, False),
    }
    paper = resolve("paper")
    assert paper == TrainConfig()
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (
        128,
        0.01,
        0.9,
        5e-4,
    )
    assert (paper.lr_factor, paper.max_lr_drops, paper.epochs) == (0.1, 3, 90)
    assert (paper.init, paper.lighting, paper.lighting_sigma) == ("paper", "paper", 0.1)
    assert (paper.crop, paper.flip, paper.decay_biases) == (227, True, False)
    assert AlexNetConfig(num_classes=1000).class_split() == (500, 500)
    assert AlexNetConfig(num_classes=1001).class_split() == (501, 500)
    assert AlexNetConfig(num_classes=5).class_split() == (3, 2)


@pytest.mark.parametrize("form", ["two-column", "grouped"])
def test_the_built_nets_pool_3x3_by_2_and_drop_half(form):
    """The layers themselves, in both forms: max-pooling over 3x3 windows every 2 pixels
    (checked on random values against a by-hand max) and dropout p = 0.5."""
    config = AlexNetConfig(num_classes=10, width=0.0625)
    net = AlexNet(config) if form == "two-column" else GroupedAlexNet(config, "cpu")
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(pools) == (6 if form == "two-column" else 3) and drops
    assert all(p.p == 0.5 for p in drops)
    x = torch.rand(1, 2, 9, 9, generator=torch.Generator().manual_seed(5))
    for pool in pools:
        got = pool(x)
        assert got.shape == (1, 2, 4, 4)
        for i in range(4):
            for j in range(4):
                window = x[0, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                assert torch.equal(got[0, :, i, j], window.amax((1, 2)))


@pytest.mark.parametrize("form", ["two-column", "grouped"])
def test_response_normalisation_follows_conv1_and_conv2_only(form):
    """Issue 23: LRN after conv1 only survived every test (the parameter count and map
    sizes are the same). The paper: conv - ReLU - LRN - pool for conv1 and conv2; conv3
    and conv4 have neither; conv5 is pooled only."""
    from training.model import LRN

    config = AlexNetConfig(num_classes=10, width=0.0625)
    net = AlexNet(config) if form == "two-column" else GroupedAlexNet(config, "cpu")
    kinds = {"conv1": [], "conv2": [], "conv3": [], "conv4": [], "conv5": []}
    for name, module in net.named_modules():
        layer = name.rsplit(".", 1)[-1]
        if layer in kinds and isinstance(module, nn.Sequential):
            kinds[layer].append([type(m).__name__ for m in module])
    pooled = ["Conv2d", "ReLU", "LRN", "MaxPool2d"]
    for layer, blocks in kinds.items():
        assert blocks, layer
        want = {
            "conv1": pooled,
            "conv2": pooled,
            "conv5": ["Conv2d", "ReLU", "MaxPool2d"],
        }.get(layer, ["Conv2d", "ReLU"])
        assert all(b == want for b in blocks), (layer, blocks)
    assert sum(isinstance(m, LRN) for m in net.modules()) == (4 if form == "two-column" else 2)


def test_the_mutation_list_matches_the_code():
    """benchmarks/mutate.py's mutants name lines of the code: a refactor that moves one
    must move the mutant too, or the mutation run would silently test less."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks/mutate.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert done.returncode == 0 and "0 stale" in done.stdout, done.stdout + done.stderr
    assert int(done.stdout.split()[0]) >= 60
