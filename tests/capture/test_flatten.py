"""pool="flatten": the hook's per-batch Grams against float64 NumPy references on the stored, flattened activations.

Every reference here is written from the formulas, in NumPy, on activations recorded by plain test hooks
(the ``raw_outputs`` fixture) and flattened by hand; the package's code under test only produced the Grams.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.models.mlp_mixer import MlpMixer
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from cka_probe import FeatureRecorder, describe_layers
from cka_probe.capture import pooling
from cka_probe.capture.pooling import flatten_activation, flattened_gram, pool_activation
from cka_probe.errors import CaptureError, FlattenWidthError
from cka_probe.math import hsic_biased, hsic_unbiased
from cka_probe.math.kernels import upper_gram_

GEN = torch.Generator().manual_seed(0)
RTOL = 1e-9


def _randn(*shape):
    return torch.randn(*shape, generator=GEN)


# --------------------------------------------------------------------------- NumPy references


def flatten_by_hand(x: torch.Tensor, layout: str, prefix: int = 0, tokens: str = "patch") -> np.ndarray:
    """(n, D) float64 features, channels first, written without the package."""
    a = x.detach().double().numpy()
    n = a.shape[0]
    if layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    elif layout == "NLC" and prefix:
        a = a[:, :1] if tokens == "cls" else a[:, prefix:] if tokens == "patch" else a
    return np.ascontiguousarray(a).reshape(n, -1)


def centred_gram_np(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0, keepdims=True)
    return xc @ xc.T


def linear_cka_np(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. 5 (biased HSIC) on column-centred features, in feature space when small."""
    k, l_ = centred_gram_np(x), centred_gram_np(y)
    return float((k * l_).sum() / (np.linalg.norm(k) * np.linalg.norm(l_)))


def hsic_unbiased_np(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012, eq. 5, on raw (uncentred) Grams: [tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))."""
    n = k.shape[0]
    kt, lt = k.copy(), l_.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(value / (n * (n - 3)))


def minibatch_cka_np(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    """Nguyen et al. 2021: sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) sum_i HSIC_1(L_i, L_i))."""
    grams_x = [x @ x.T for x in xs]
    grams_y = [y @ y.T for y in ys]
    xy = sum(hsic_unbiased_np(k, l_) for k, l_ in zip(grams_x, grams_y))
    xx = sum(hsic_unbiased_np(k, k) for k in grams_x)
    yy = sum(hsic_unbiased_np(l_, l_) for l_ in grams_y)
    return xy / np.sqrt(xx * yy)


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    """The full biased estimator from two Grams, through the package's HSIC."""
    return float(hsic_biased(gram_x, gram_y) / torch.sqrt(hsic_biased(gram_x, gram_x) * hsic_biased(gram_y, gram_y)))


def assert_rel(actual: float, expected: float, rtol: float = RTOL) -> None:
    assert abs(actual - expected) <= rtol * abs(expected), (actual, expected, abs(actual - expected) / abs(expected))


# --------------------------------------------------------------------------- one activation


@pytest.mark.parametrize(
    ("layout", "shape", "prefix", "tokens"),
    [
        ("NCHW", (5, 3, 4, 6), 0, "patch"),
        ("NHWC", (5, 4, 6, 3), 0, "patch"),
        ("NCL", (5, 3, 7), 0, "patch"),
        ("NLC", (5, 7, 3), 0, "patch"),
        ("NLC", (5, 7, 3), 2, "patch"),
        ("NLC", (5, 7, 3), 2, "all"),
        ("NLC", (5, 7, 3), 2, "cls"),
        ("NC", (5, 3), 0, "patch"),
    ],
)
def test_flatten_and_gram_match_reference(layout, shape, prefix, tokens, monkeypatch, torch_threads):
    x = _randn(*shape)
    expected = flatten_by_hand(x, layout, prefix, tokens)
    np.testing.assert_array_equal(flatten_activation(x, layout, prefix, tokens).double().numpy(), expected)
    monkeypatch.setattr(pooling, "_GRAM_BLOCK_ELEMENTS", 2 * shape[0])  # blocks of 2 columns: many partial sums
    gram, width = flattened_gram(x, layout, prefix, tokens)
    assert gram.dtype == torch.float64 and width == expected.shape[1]
    np.testing.assert_allclose(
        gram.numpy(), centred_gram_np(expected), rtol=RTOL, atol=RTOL * np.abs(expected).max() ** 2
    )


@pytest.mark.parametrize(
    ("layout", "shape", "prefix", "tokens"),
    [("NCHW", (16, 8, 20, 30), 0, "patch"), ("NHWC", (16, 20, 30, 8), 0, "patch"), ("NLC", (16, 50, 96), 1, "patch")],
)
def test_float32_gram_is_within_1e6_of_the_float64_reference(layout, shape, prefix, tokens, monkeypatch, torch_threads):
    # --precision float32 carries to flattened layers: blocks of float32 products summed in float64. Post-ReLU
    # values with a large common offset, so that centring in float32 matters.
    x = torch.relu(_randn(*shape)) + 3.0
    expected = centred_gram_np(flatten_by_hand(x, layout, prefix, tokens))
    monkeypatch.setattr(pooling, "FLOAT32_BLOCK", 1000)  # several blocks even for these small activations
    gram, width = flattened_gram(x, layout, prefix, tokens, precision="float32")
    assert gram.dtype == torch.float64 and width == flatten_by_hand(x, layout, prefix, tokens).shape[1]
    np.testing.assert_allclose(gram.numpy(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    other = centred_gram_np(flatten_by_hand(torch.relu(_randn(*shape)), layout, prefix, tokens))
    exact = float((expected * other).sum() / (np.linalg.norm(expected) * np.linalg.norm(other)))
    assert (
        abs(float((gram.numpy() * other).sum() / (np.linalg.norm(gram.numpy()) * np.linalg.norm(other))) - exact) < 1e-6
    )


def test_float32_gram_centres_again_where_the_mean_dwarfs_the_spread(monkeypatch, torch_threads):
    # Blocks are centred as they are copied; where the mean is hundreds of times the spread (a ViT's massive
    # activations), the mean float32 rounding leaves matters (2e-6 of the largest entry here without the second
    # pass), so the rule centres such blocks again.
    x = torch.relu(_randn(16, 8, 20, 30)) + 300.0
    expected = centred_gram_np(flatten_by_hand(x, "NCHW"))
    monkeypatch.setattr(pooling, "FLOAT32_BLOCK", 1000)
    passes = []
    rule = pooling.mean_left_matters
    monkeypatch.setattr(pooling, "mean_left_matters", lambda *args: passes.append(rule(*args)) or passes[-1])
    gram, _ = flattened_gram(x, "NCHW", precision="float32")
    assert passes and all(passes)
    np.testing.assert_allclose(gram.numpy(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_gram_of_half_precision_activation_widens_it_exactly(dtype, monkeypatch):
    # Activations under autocast: widened to float32 exactly, then centred; the reference widens them in float64.
    x = torch.relu(_randn(12, 4, 6, 7)).to(dtype)
    monkeypatch.setattr(pooling, "FLOAT32_BLOCK", 50)
    gram, width = flattened_gram(x, "NCHW", precision="float32")
    expected = centred_gram_np(flatten_by_hand(x, "NCHW"))
    assert width == 4 * 6 * 7
    np.testing.assert_allclose(gram.numpy(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_constant_flattened_layer_is_nan_with_warning(precision, monkeypatch, torch_threads):
    # A layer whose activation is the same for every image (a bias alone, say) has no CKA. Its hook Gram must
    # say so exactly: identical rows, whatever float32 rounding of the means and the BLAS kernels leave, so that
    # cka_matrix reports it as constant instead of a number made of rounding.
    from cka_probe.math import Gram, ZeroVarianceWarning, cka_matrix

    monkeypatch.setattr(pooling, "FLOAT32_BLOCK", 100)
    monkeypatch.setattr(pooling, "_GRAM_BLOCK_ELEMENTS", 100 * 24)
    dead = (torch.rand(1, 5, 7, 9, generator=GEN) * 3.7 + 0.3).repeat(24, 1, 1, 1)
    live = torch.relu(_randn(24, 5, 7, 9))
    grams = {
        name: Gram(flattened_gram(x, "NCHW", precision=precision)[0]) for name, x in (("dead", dead), ("live", live))
    }
    with pytest.warns(ZeroVarianceWarning, match="dead"):
        values = cka_matrix(grams, dtype=precision).values
    assert torch.isnan(values[0]).all() and torch.isnan(values[:, 0]).all()
    assert float(values[1, 1]) == pytest.approx(1.0, abs=1e-12 if precision == "float64" else 1e-6)


def test_float32_gram_products_run_without_tf32_or_bfloat16_passes(monkeypatch):
    # A user's torch.set_float32_matmul_precision("medium") would let float32 products take bfloat16 (or, on
    # CUDA, TF32) passes, 1e-3 errors: the Grams of flattened layers are formed at "highest", then it is restored.
    seen = []

    def recording(x, out, accumulate=False):
        seen.append(torch.get_float32_matmul_precision())
        return upper_gram_(x, out, accumulate)

    monkeypatch.setattr(pooling, "upper_gram_", recording)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        flattened_gram(_randn(4, 3, 5, 5), "NCHW", precision="float32")
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_unknown_gram_precision_is_refused():
    with pytest.raises(ValueError, match="--precision"):
        flattened_gram(_randn(3, 2, 4, 4), "NCHW", precision="float16")
    with pytest.raises(ValueError, match="--precision"):
        FeatureRecorder(nn.Sequential(nn.ReLU()), pool="flatten", precision="half")


def test_gram_of_channels_last_and_sliced_tensors_needs_no_copy_and_matches():
    x = _randn(4, 3, 5, 6).to(memory_format=torch.channels_last)
    gram, width = flattened_gram(x, "NCHW")
    np.testing.assert_allclose(gram.numpy(), centred_gram_np(flatten_by_hand(x, "NCHW")), rtol=RTOL, atol=1e-12)
    rows = pooling._rows_in_memory_order(x)
    assert rows.data_ptr() == x.data_ptr() and width == 90  # a view of the activation, not a copy
    tokens = _randn(4, 9, 5)
    assert pooling._rows_in_memory_order(tokens[:, 1:]).data_ptr() == tokens[:, 1:].data_ptr()


def test_pool_activation_refuses_flatten_and_float16_gram_is_float64():
    x = _randn(3, 2, 4, 4)
    with pytest.raises(ValueError, match="flattened_gram"):
        pool_activation(x, "NCHW", pool="flatten")
    gram, _ = flattened_gram(x.half(), "NCHW")
    np.testing.assert_allclose(gram.numpy(), centred_gram_np(flatten_by_hand(x.half(), "NCHW")), rtol=RTOL, atol=1e-9)


# --------------------------------------------------------------------------- models: hook path vs stored activations


def _swin():
    return SwinTransformer(
        img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=5
    )


def _mixer():
    return MlpMixer(num_classes=5, img_size=32, patch_size=8, num_blocks=2, embed_dim=24)


MODELS = {
    "resnet_nchw": (lambda: timm.create_model("test_resnet", pretrained=False), 32, "NCHW"),
    "convnext_nhwc": (lambda: timm.create_model("test_convnext", pretrained=False), 32, "NHWC"),
    "swin_tokens": (_swin, 32, "NLC"),
    "vit_prefix": (lambda: timm.create_model("test_vit", pretrained=False, img_size=32, reg_tokens=2), 32, "NLC"),
    "vit_no_prefix": (
        lambda: timm.create_model("test_vit", pretrained=False, img_size=32, class_token=False, global_pool="avg"),
        32,
        "NLC",
    ),
    "mixer": (_mixer, 32, "NCL"),
}


def _build(name):
    factory, size, layout = MODELS[name]
    torch.manual_seed(0)
    return factory().eval(), size, layout


def _record(model, batches, tokens="patch", layers="activations"):
    with FeatureRecorder(model, layers=layers, pool="flatten", tokens=tokens) as rec, torch.no_grad():
        for batch in batches:
            model(batch)
    return rec


@pytest.mark.parametrize(
    ("name", "tokens"),
    [
        ("resnet_nchw", "patch"),
        ("convnext_nhwc", "patch"),
        ("swin_tokens", "patch"),
        ("vit_prefix", "patch"),
        ("vit_prefix", "all"),
        ("vit_prefix", "cls"),
        ("vit_no_prefix", "patch"),
        ("mixer", "patch"),
    ],
)
def test_full_batch_flattened_cka_matches_numpy_on_stored_activations(name, tokens, raw_outputs, one_thread):
    model, size, layout = _build(name)
    images = _randn(12, 3, size, size)
    rec = _record(model, [images], tokens)
    labels = rec.layers
    assert len(labels) >= 2 and all("#" not in label for label in labels)
    assert any(rec.layouts[label].layout == layout for label in labels)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    assert (prefix > 0) == (name == "vit_prefix")

    raw = raw_outputs(model, labels)
    with torch.no_grad():
        model(images)
    flat = {
        label: flatten_by_hand(raw[label][0], rec.layouts[label].layout, rec.layouts[label].prefix_tokens, tokens)
        for label in labels
    }
    grams = rec.grams
    for label in labels:
        assert rec.widths[label] == flat[label].shape[1]
        assert len(grams[label]) == 1 and grams[label][0].shape == (12, 12)
        expected = centred_gram_np(flat[label])
        np.testing.assert_allclose(grams[label][0].numpy(), expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())
    for i, a in enumerate(labels):
        for b in labels[i:]:
            assert_rel(cka_from_grams(grams[a][0], grams[b][0]), linear_cka_np(flat[a], flat[b]))


@pytest.mark.parametrize("name", ["convnext_nhwc", "vit_prefix", "mixer"])
def test_minibatch_flattened_cka_matches_numpy_minibatch_estimator(name, raw_outputs, one_thread):
    model, size, _ = _build(name)
    batches = [_randn(b, 3, size, size) for b in (8, 8, 6)]
    rec = _record(model, batches)
    assert rec.batch_sizes == (8, 8, 6) and rec.num_examples == 22
    labels = rec.layers
    raw = raw_outputs(model, labels)
    with torch.no_grad():
        for batch in batches:
            model(batch)
    flat = {
        label: [flatten_by_hand(out, rec.layouts[label].layout, rec.layouts[label].prefix_tokens) for out in raw[label]]
        for label in labels
    }
    grams = rec.grams
    for a in labels[:3]:
        for b in labels[-3:]:
            xy = sum(hsic_unbiased(k, l_) for k, l_ in zip(grams[a], grams[b]))
            xx = sum(hsic_unbiased(k, k) for k in grams[a])
            yy = sum(hsic_unbiased(l_, l_) for l_ in grams[b])
            assert_rel(float(xy / torch.sqrt(xx * yy)), minibatch_cka_np(flat[a], flat[b]))


# --------------------------------------------------------------------------- behaviour and errors


class _InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.conv(x))
        x.mul_(0.0)  # after the hook: the Gram must already be formed
        return x


def test_gram_is_formed_in_the_hook_before_later_in_place_changes(raw_outputs):
    torch.manual_seed(0)
    model = _InPlace().eval()
    images = _randn(6, 3, 5, 5)
    with torch.no_grad():
        expected = centred_gram_np(flatten_by_hand(model.relu(model.conv(images)), "NCHW"))
    rec = _record(model, [images])
    np.testing.assert_allclose(rec.grams["relu"][0].numpy(), expected, rtol=RTOL, atol=1e-12)
    assert np.abs(expected).max() > 0


def test_width_change_between_batches_is_one_line_error(one_thread):
    model, _, _ = _build("resnet_nchw")
    with FeatureRecorder(model, pool="flatten") as rec, torch.no_grad():
        model(_randn(4, 3, 32, 32))
        with pytest.raises(
            FlattenWidthError, match=r"input size changed; use --pool mean or a fixed input size"
        ) as info:
            model(_randn(4, 3, 48, 48))
    assert "\n" not in str(info.value)
    assert rec.num_batches == 1


def test_features_and_grams_refuse_the_other_mode():
    model = _InPlace().eval()
    flat = _record(model, [_randn(4, 3, 5, 5)])
    with pytest.raises(CaptureError, match="rec.grams"):
        _ = flat.features
    with FeatureRecorder(model) as pooled, torch.no_grad():
        model(_randn(4, 3, 5, 5))
    with pytest.raises(CaptureError, match="--pool flatten"):
        _ = pooled.grams
    assert pooled.widths == {"relu": 4} and flat.widths == {"relu": 100}


def test_describe_layers_reports_flattened_width():
    model = _InPlace().eval()
    infos = describe_layers(model, torch.zeros(1, 3, 5, 5), pool="flatten")
    assert [(i.name, i.pooled_dim) for i in infos] == [("relu", 4 * 5 * 5)]


def test_streaming_take_grams_into_minibatch_cka_matches_numpy(raw_outputs, one_thread):
    from cka_probe.math import Gram, MinibatchCKA

    model, size, _ = _build("convnext_nhwc")
    batches = [_randn(b, 3, size, size) for b in (6, 6, 5)]
    metric = MinibatchCKA()
    with FeatureRecorder(model, pool="flatten") as rec, torch.no_grad():
        for batch in batches:
            model(batch)
            metric.update({label: Gram(grams[0]) for label, grams in rec.take_grams().items()})
    assert rec.num_examples == 17 and all(len(g) == 0 for g in rec.grams.values())
    labels = rec.layers
    raw = raw_outputs(model, labels)
    with torch.no_grad():
        for batch in batches:
            model(batch)
    flat = {label: [flatten_by_hand(out, rec.layouts[label].layout) for out in raw[label]] for label in labels}
    matrix = metric.compute()
    for a in labels:
        for b in labels:
            assert_rel(matrix[a, b], minibatch_cka_np(flat[a], flat[b]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(("layout", "shape"), [("NCHW", (24, 8, 33, 35)), ("NLC", (24, 197, 40))])
def test_cuda_flattened_gram_equals_the_cpu_one(precision, layout, shape):
    # The same block loop on the GPU (block rows of products there): the Gram stays on the device and matches
    # the CPU's to float64 rounding, or within the float32 bound relative to the largest entry.
    x = torch.relu(torch.randn(*shape, generator=torch.Generator().manual_seed(3)) + 0.5)
    prefix = 1 if layout == "NLC" else 0
    cpu, width = flattened_gram(x, layout, prefix_tokens=prefix, precision=precision)
    gpu, width_gpu = flattened_gram(x.cuda(), layout, prefix_tokens=prefix, precision=precision)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64 and width_gpu == width
    scale = float(cpu.abs().max())
    tolerance = 1e-12 if precision == "float64" else 1e-6
    assert float((gpu.cpu() - cpu).abs().max()) <= tolerance * scale
