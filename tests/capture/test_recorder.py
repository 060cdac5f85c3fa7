"""FeatureRecorder: hooks and their removal, batches, repeated modules, autograd, dtypes, errors."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cka_probe import FeatureRecorder, LayerInfo, cka_matrix, describe_layers
from cka_probe.errors import CaptureError, LayerSelectionError, ShapeError

GEN = torch.Generator().manual_seed(0)


def _images(n, size=8):
    return torch.randn(n, 3, size, size, generator=GEN)


class Toy(nn.Module):
    """conv -> bn -> ReLU(inplace) -> in-place add -> mean -> linear -> GELU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 5)
        self.act = nn.GELU()
        self.fail = False

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        if self.fail:
            raise ValueError("forward failed on purpose")
        x += 100.0  # mutates the recorded activation in place
        return self.act(self.fc(x.mean((2, 3))))


def _toy():
    torch.manual_seed(0)
    return Toy().eval()


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------- batches and hooks


def test_batches_concatenate_with_labels_in_step(raw_outputs, hand_pool):
    model = _toy()
    raw = raw_outputs(model, ["fc"])
    x1, x2 = _images(2), _images(3)
    with FeatureRecorder(model) as rec, torch.no_grad():
        model(x1)
        model(x2)
    assert rec.layers == ("relu", "act")
    assert (rec.num_batches, rec.num_examples) == (2, 5)
    with torch.no_grad():
        relu_reference = torch.cat([F.relu(model.bn(model.conv(x))).mean((2, 3)) for x in (x1, x2)])
    torch.testing.assert_close(rec.features["relu"], relu_reference)
    torch.testing.assert_close(rec.features["act"], F.gelu(torch.cat(raw["fc"])))
    assert all(f.dtype == torch.float32 for f in rec.features.values())
    assert cka_matrix(rec.features).rows == rec.layers  # the mapping feeds the math as it is


def test_inplace_changes_after_the_hook_do_not_reach_the_features():
    model = _toy()
    kept_references = []
    handle = model.relu.register_forward_hook(lambda m, a, out: kept_references.append(out))
    x = _images(2)
    with FeatureRecorder(model, layers=["relu"]) as rec, torch.no_grad():
        model(x)
    handle.remove()
    with torch.no_grad():
        before_add = F.relu(model.bn(model.conv(x)))
    torch.testing.assert_close(kept_references[0], before_add + 100.0)  # the model does mutate it
    torch.testing.assert_close(rec.features["relu"], before_add.mean((2, 3)))


def test_hooks_removed_on_exit_and_on_exception():
    model = _toy()
    with FeatureRecorder(model) as rec:
        assert _hook_count(model) == 5 and rec.attached
        with torch.no_grad():
            model(_images(2))
    assert _hook_count(model) == 0 and not rec.attached
    with pytest.raises(RuntimeError, match="user error"), FeatureRecorder(model) as rec:
        with torch.no_grad():
            model(_images(2))
        raise RuntimeError("user error")
    assert _hook_count(model) == 0
    assert rec.features["relu"].shape == (2, 4)  # what was recorded stays


def test_attach_remove_and_reset_without_with():
    model = _toy()
    rec = FeatureRecorder(model)
    assert rec.attach() is rec
    with pytest.raises(CaptureError, match="already attached"):
        rec.attach()
    with torch.no_grad():
        model(_images(2))
    rec.remove()
    assert _hook_count(model) == 0
    with torch.no_grad():
        model(_images(2))  # not recorded
    assert rec.num_examples == 2 and rec.features["act"].shape == (2, 5)
    rec.reset()
    assert rec.features == {} and rec.layers == () and rec.num_examples == 0


def test_forward_that_raises_leaves_no_partial_rows():
    model = _toy()
    with FeatureRecorder(model) as rec, torch.no_grad():
        model(_images(2))
        model.fail = True
        with pytest.raises(ValueError, match="on purpose"):
            model(_images(3))
        model.fail = False
        model(_images(4))
    assert {name: f.shape[0] for name, f in rec.features.items()} == {"relu": 6, "act": 6}


# --------------------------------------------------------------------------- repeated modules


def test_torchvision_shared_relu_is_recorded_per_call(raw_outputs, hand_pool):
    model = torchvision.models.resnet18().eval()
    raw = raw_outputs(model, ["relu", "layer1.0.relu", "layer3.1.relu"])
    x1, x2 = _images(2, 64), _images(2, 64)
    with FeatureRecorder(model) as rec, torch.no_grad():
        model(x1)
        model(x2)
    assert rec.layers[:6] == (
        "relu",
        "layer1.0.relu",
        "layer1.0.relu#2",
        "layer1.1.relu",
        "layer1.1.relu#2",
        "layer2.0.relu",
    )
    assert len(rec.layers) == 17 and not any(label.endswith("#3") for label in rec.layers)
    for name in ("layer1.0.relu", "layer3.1.relu"):
        first, second = raw[name][0::2], raw[name][1::2]  # calls alternate within each forward
        torch.testing.assert_close(rec.features[name], torch.cat([hand_pool(t, "NCHW") for t in first]).float())
        torch.testing.assert_close(rec.features[f"{name}#2"], torch.cat([hand_pool(t, "NCHW") for t in second]).float())
    torch.testing.assert_close(rec.features["relu"], torch.cat([hand_pool(t, "NCHW") for t in raw["relu"]]).float())


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.ReLU(), nn.Tanh()

    def forward(self, x):
        return self.a(x) if x.shape[0] == 2 else self.b(x)


def test_batches_running_other_layers_are_an_error():
    model = Branchy()
    with FeatureRecorder(model) as rec:
        model(torch.randn(2, 4))
        with pytest.raises(CaptureError, match=r"batch 2 ran 1 layers .* came b instead of a"):
            model(torch.randn(3, 4))
        model(torch.randn(2, 4))
    assert rec.layers == ("a",) and rec.features["a"].shape == (4, 4)


def test_feature_width_changing_between_batches_is_an_error():
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    with FeatureRecorder(model) as rec:
        model(torch.randn(2, 4))
        with pytest.raises(CaptureError, match="gave 6 features in batch 2 but 4"):
            model(torch.randn(2, 6))
    assert rec.features["1"].shape == (2, 4)


def test_submodule_called_directly_is_an_error():
    model = _toy()
    with FeatureRecorder(model), pytest.raises(CaptureError, match=r"call the model itself, model\(x\)"):
        model.relu(torch.randn(2, 4))
    vit = timm.create_model("test_vit", pretrained=False).eval()
    with FeatureRecorder(vit), torch.no_grad(), pytest.raises(CaptureError, match="forward_features"):
        vit.forward_features(torch.randn(1, 3, 160, 160))
    assert _hook_count(vit) == 0


# --------------------------------------------------------------------------- autograd, modes, dtypes, devices


def test_no_autograd_graph_is_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.GELU())
    x = _images(2).requires_grad_()
    with FeatureRecorder(model) as rec:
        model(x).sum().backward()  # grad enabled: the model's own graph works as usual
    assert x.grad is not None and rec.layers == ("1", "4")
    for features in rec.features.values():
        assert not features.requires_grad and features.grad_fn is None


@pytest.mark.parametrize("batches", [1, 2])
def test_inference_mode_gives_the_same_features(batches):
    model = _toy()
    xs = [_images(2) for _ in range(batches)]
    with FeatureRecorder(model) as plain, torch.no_grad():
        for x in xs:
            model(x)
    with FeatureRecorder(model) as inference, torch.inference_mode():
        for x in xs:
            model(x)
    weight = torch.ones((), requires_grad=True)
    for name in plain.layers:
        features = inference.features[name]
        torch.testing.assert_close(features, plain.features[name])
        # usable outside inference mode: not an inference tensor, so autograd and in-place updates work
        assert not features.is_inference()
        (features * weight).sum().backward()
        features.add_(1.0)
        torch.testing.assert_close(features, plain.features[name] + 1.0)


def test_bfloat16_autocast_records_float32(raw_outputs, hand_pool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU()).eval()
    raw = raw_outputs(model, ["1"])
    with FeatureRecorder(model) as rec, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(3, 5, 8))
    assert raw["1"][0].dtype == torch.bfloat16
    assert rec.features["1"].dtype == torch.float32
    torch.testing.assert_close(rec.features["1"].double(), hand_pool(raw["1"][0], "NLC"), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_stay_on_the_device():
    model = _toy()
    x = _images(2)
    with FeatureRecorder(model) as cpu_rec, torch.no_grad():
        model(x)
    model.cuda()
    with FeatureRecorder(model) as rec, torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        model(x.cuda())
    for name, features in rec.features.items():
        assert features.device.type == "cuda" and features.dtype == torch.float32
        torch.testing.assert_close(features.cpu(), cpu_rec.features[name], rtol=2e-2, atol=2e-2)


def test_max_pool_option(raw_outputs):
    model = _toy()
    raw = raw_outputs(model, ["relu"])
    x = _images(2)
    with FeatureRecorder(model, layers=["relu"], pool="max") as rec, torch.no_grad():
        model(x)
    torch.testing.assert_close(rec.features["relu"], (raw["relu"][0]).amax((2, 3)))


# --------------------------------------------------------------------------- tokens and layouts


def test_cls_token_needs_prefix_tokens(raw_outputs):
    with pytest.raises(LayerSelectionError, match="--tokens cls needs a class token, but Toy has none"):
        FeatureRecorder(_toy(), tokens="cls")
    vit = timm.create_model("test_vit", pretrained=False).eval()
    raw = raw_outputs(vit, ["blocks.0.mlp.act"])
    with FeatureRecorder(vit, tokens="cls") as rec, torch.no_grad():
        vit(torch.randn(2, 3, 160, 160, generator=GEN))
    torch.testing.assert_close(rec.features["blocks.0.mlp.act"], raw["blocks.0.mlp.act"][0][:, 0])


class ToGrid(nn.Module):
    """(N, 3, 32, 32) -> (N, 8, 8, 8): a layout no structural rule can tell."""

    def forward(self, x):
        return x[:, :1, ::4, ::4].expand(-1, 8, -1, -1) * torch.arange(1.0, 9.0).view(1, 8, 1, 1)


def test_ambiguous_layout_raises_and_override_decides(raw_outputs, hand_pool):
    model = nn.Sequential(ToGrid(), nn.ReLU())
    x = torch.randn(2, 3, 32, 32, generator=GEN)
    with (
        FeatureRecorder(model),
        pytest.raises(LayerSelectionError, match=r"both of NCHW and NHWC fit .* use --layouts-a/-b '1=NCHW'"),
    ):
        model(x)
    assert _hook_count(model) == 0
    raw = raw_outputs(model, ["1"])
    with FeatureRecorder(model, layouts={"1": "NHWC"}) as rec:
        model(x)
    assert rec.layouts["1"].layout == "NHWC" and rec.layouts["1"].source == "override 1=NHWC"
    torch.testing.assert_close(rec.features["1"], hand_pool(raw["1"][0], "NHWC").float())
    # the fix the message suggests, as the CLI passes it: PATTERN=LAYOUT strings
    with FeatureRecorder(model, layouts=["1=NCHW"]) as rec:
        model(x)
    torch.testing.assert_close(rec.features["1"], hand_pool(raw["1"][1], "NCHW").float())


def test_selection_errors_at_construction():
    with pytest.raises(LayerSelectionError, match=r"layer pattern 'relux' .* close matches: relu"):
        FeatureRecorder(_toy(), layers=["relux"])
    with pytest.raises(
        LayerSelectionError, match=r"--layouts-a/-b \(or --layouts\) pattern 'reul' .* close matches: relu"
    ):
        FeatureRecorder(_toy(), layouts={"reul": "NCHW"})
    with pytest.raises(LayerSelectionError, match="unknown layout 'CHW'"):
        FeatureRecorder(_toy(), layouts={"relu": "CHW"})
    with pytest.raises(LayerSelectionError, match="finds no module"):
        FeatureRecorder(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="unknown pool"):
        FeatureRecorder(_toy(), pool="median")


class PositionTable(nn.Module):
    """An activation applied to a parameter table: one row per position, not per image."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(5, 4))
        self.act = nn.ReLU()
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(x + self.act(self.table).sum())


def test_outputs_without_one_row_per_image():
    model = PositionTable()
    with pytest.warns(UserWarning, match=r"skipped 1 activation call\(s\) .* e.g. act"), FeatureRecorder(model) as rec:
        model(torch.randn(2, 4))
    assert rec.layers == ("out",) and list(rec.skipped) == ["act"]
    with FeatureRecorder(model, layers=["act"]), pytest.raises(ShapeError, match="does not have one row per image"):
        model(torch.randn(2, 4))
    scalar_per_image = nn.Sequential(nn.Flatten(0))
    with FeatureRecorder(scalar_per_image, layers=["0"]), pytest.raises(ShapeError, match=r"\(4,\) is 1-D"):
        scalar_per_image(torch.randn(4, 1))
    lstm = nn.Sequential(nn.LSTM(4, 4))
    with FeatureRecorder(lstm, layers=["0"]), pytest.raises(ShapeError, match="returned tuple, not a tensor"):
        lstm(torch.randn(2, 3, 4))


# --------------------------------------------------------------------------- describe


def test_describe_after_a_forward():
    model = _toy()
    rec = FeatureRecorder(model)
    with pytest.raises(CaptureError, match="no forward recorded yet"):
        rec.describe()
    with rec, torch.no_grad():
        model(_images(2))
    relu, act = rec.describe()
    assert relu == LayerInfo(
        name="relu",
        module_name="relu",
        module_type="torch.nn.modules.activation.ReLU",
        layout="NCHW",
        prefix_tokens=0,
        layout_source="structure: follows BatchNorm2d 'bn'",
        raw_shape=(2, 4, 8, 8),
        pooled_dim=4,
    )
    assert (act.layout, act.raw_shape, act.pooled_dim) == ("NC", (2, 5), 5)


def test_describe_layers_keeps_no_hooks():
    model = torchvision.models.resnet18().eval()
    infos = describe_layers(model, _images(1, 64))
    assert _hook_count(model) == 0
    assert [i.name for i in infos][:3] == ["relu", "layer1.0.relu", "layer1.0.relu#2"]
    assert infos[-1].raw_shape == (1, 512, 2, 2) and infos[-1].pooled_dim == 512
    vit = timm.create_model("test_vit", pretrained=False).eval()
    vit_infos = describe_layers(vit, torch.randn(1, 3, 160, 160), tokens="all")
    assert {(i.layout, i.prefix_tokens, i.module_type) for i in vit_infos} == {
        ("NLC", 1, "torch.nn.modules.activation.GELU")
    }


def test_a_selection_that_never_runs_is_an_error():
    from torch import nn

    from cka_probe.errors import CaptureError

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.ReLU()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    model = Skips()
    with (
        pytest.raises(CaptureError, match="none of the 1 selected modules produced a feature"),
        FeatureRecorder(model) as recorder,
        torch.no_grad(),
    ):
        model(torch.randn(2, 4))
    assert not recorder.attached
