"""compare(): the CKA table is the engine's CKA of independently captured features, labels in step."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from torch import nn

from cka_probe import cka_matrix
from cka_probe.errors import CKAProbeError, ShapeError
from cka_probe.jobs import CKAResult, compare

from ..math import reference


def _manual_features(model: nn.Module, images: torch.Tensor, module_types) -> dict[str, torch.Tensor]:
    """Record conv-net activations with plain hooks and pool them by hand (NCHW -> mean over H, W)."""
    records: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, inputs, output):
            records[name] = output.detach().mean(dim=(2, 3)).clone()

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, module_types)]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return records


@pytest.fixture(scope="module")
def two_cnns():
    torch.manual_seed(0)
    a = timm.create_model("test_resnet", pretrained=False).eval()
    torch.manual_seed(1)
    b = timm.create_model("test_efficientnet", pretrained=False).eval()
    images = torch.randn(12, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    return a, b, images


def test_matrix_equals_cka_of_manually_pooled_features(two_cnns):
    a, b, images = two_cnns
    result = compare(a, b, images, n=12, progress=False, device="cpu")
    feats_a = _manual_features(a, images, nn.ReLU)
    feats_b = _manual_features(b, images, nn.SiLU)
    expected = cka_matrix(feats_a, feats_b)
    assert list(result.matrix.index) == list(expected.rows)
    assert list(result.matrix.columns) == list(expected.cols)
    np.testing.assert_allclose(result.matrix.to_numpy(), expected.values.numpy(), rtol=1e-6, atol=1e-9)


def test_batches_do_not_change_the_full_estimator(two_cnns):
    a, b, images = two_cnns
    one_batch = compare(a, b, images, n=12, progress=False, device="cpu")
    batched = compare(a, b, images, n=12, batch_size=5, estimator="full", progress=False, device="cpu")
    np.testing.assert_allclose(batched.matrix.to_numpy(), one_batch.matrix.to_numpy(), rtol=1e-5, atol=1e-7)
    assert batched.metadata["estimator"] == "full" and batched.metadata["batch_size"] == 5


def test_minibatch_estimator_counts_every_batch(two_cnns):
    a, b, images = two_cnns
    result = compare(a, b, images, n=12, batch_size=6, estimator="minibatch", progress=False, device="cpu")
    assert result.metadata["estimator"] == "minibatch" and result.metadata["unbiased"] is True
    assert result.metadata["minibatch_size"] == 6 and "Nguyen" in result.metadata["estimator_description"]
    feats_a = {k: v.double().numpy() for k, v in _manual_features(a, images, nn.ReLU).items()}
    feats_b = {k: v.double().numpy() for k, v in _manual_features(b, images, nn.SiLU).items()}
    halves = (slice(0, 6), slice(6, 12))
    expected = [
        [reference.minibatch_cka([x[s] for s in halves], [y[s] for s in halves]) for y in feats_b.values()]
        for x in feats_a.values()
    ]
    np.testing.assert_allclose(result.matrix.to_numpy(), np.array(expected), rtol=1e-5, atol=1e-7)


def test_batch_size_alone_never_switches_the_estimator(two_cnns):
    a, b, images = two_cnns
    batched = compare(a, b, images, n=12, batch_size=6, progress=False, device="cpu")
    assert batched.metadata["estimator"] == "full" and batched.metadata["minibatch_size"] is None


def test_data_loader_input(two_cnns):
    a, b, images = two_cnns
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(12)), batch_size=5)
    from_loader = compare(a, b, loader, n=12, progress=False, device="cpu")
    from_tensor = compare(a, b, images, n=12, progress=False, device="cpu")
    np.testing.assert_allclose(from_loader.matrix.to_numpy(), from_tensor.matrix.to_numpy(), rtol=1e-6)


def test_self_comparison_by_name_has_unit_diagonal():
    result = compare("test_vit", "test_vit", "synthetic", n=8, weights="random", progress=False, device="cpu")
    values = result.matrix.to_numpy()
    np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-10)
    np.testing.assert_allclose(values, values.T, atol=1e-12)
    assert result.metadata["data"]["synthetic"] is True
    assert "synthetic" in result.title()


def test_names_and_probe_set_provenance():
    result = compare("test_resnet", "test_vit", "embedded", n=10, weights="random", progress=False, device="cpu")
    meta = result.metadata
    assert result.matrix.shape == (len(meta["layers"]["a"]), len(meta["layers"]["b"]))
    assert [row["name"] for row in meta["layers"]["a"]] == list(result.matrix.index)
    assert meta["models"]["a"]["timm_name"] == "test_resnet" and meta["models"]["b"]["num_prefix_tokens"] == 1
    assert meta["n"] == 10 and meta["data"]["n"] == 10 and len(meta["data"]["image_list_sha256"]) == 64
    for key in ("versions", "environment", "kernel", "estimator", "pooling", "tokens", "seed", "device", "dtype"):
        assert key in meta
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]
    assert math.isfinite(meta["summary"]["diagonal_band_mean"])


def test_save_and_load_round_trip(tmp_path, two_cnns):
    a, b, images = two_cnns
    result = compare(a, b, images, n=12, progress=False, device="cpu")
    result.matrix.iloc[0, 0] = float("nan")  # NaN must survive as an empty CSV cell and a JSON null
    result.metadata["summary"]["diagonal_band_mean"] = float("nan")
    paths = result.save(tmp_path, formats=("png", "svg"))
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in paths.values()}
    loaded = CKAResult.load(paths["csv"])
    np.testing.assert_allclose(loaded.matrix.to_numpy(), result.matrix.to_numpy(), rtol=1e-9, equal_nan=True)
    assert json.loads(paths["json"].read_text())["summary"]["diagonal_band_mean"] is None
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CKAProbeError, match="exists already"):
        result.save(tmp_path, formats=("png",))
    result.save(tmp_path, formats=("png",), overwrite=True)


def test_bad_settings_fail_before_any_model_runs(monkeypatch):
    import importlib

    compare_module = importlib.import_module("cka_probe.jobs.comparison")
    models_module = importlib.import_module("cka_probe.models")

    def no_model(*args, **kwargs):
        pytest.fail("a model was built before the settings were checked")

    monkeypatch.setattr(compare_module, "model_features", no_model)
    monkeypatch.setattr(models_module, "load_model", no_model)
    with pytest.raises(ShapeError, match="n >= 4"):
        compare("test_resnet", "test_vit", "synthetic", n=3, unbiased=True, weights="random", progress=False)
    with pytest.raises(CKAProbeError, match="unknown kernel"):
        compare("test_resnet", "test_vit", "synthetic", n=8, kernel="poly", weights="random", progress=False)
    with pytest.raises(CKAProbeError, match="unknown estimator 'auto'"):
        compare("test_resnet", "test_vit", "synthetic", n=8, estimator="auto", weights="random", progress=False)
    with pytest.raises(CKAProbeError, match="unknown token rule"):
        compare("test_resnet", "test_vit", "synthetic", n=8, tokens_a="first", weights="random", progress=False)
    with pytest.raises(CKAProbeError, match="no CUDA"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        compare("test_resnet", "test_vit", "synthetic", n=8, device="cuda", weights="random", progress=False)


def test_float32_precision_is_recorded_and_close_to_float64(two_cnns):
    a, b, images = two_cnns
    exact = compare(a, b, images, n=12, progress=False, device="cpu")
    fast = compare(a, b, images, n=12, precision="float32", progress=False, device="cpu")
    assert exact.metadata["precision"] == "float64" and fast.metadata["precision"] == "float32"
    assert "float32" in fast.metadata["estimator_description"]
    np.testing.assert_allclose(fast.matrix.to_numpy(), exact.matrix.to_numpy(), atol=1e-5)
    with pytest.raises(CKAProbeError, match="float32 applies to the full estimator"):
        compare(a, b, images, n=12, batch_size=6, estimator="minibatch", precision="float32", progress=False)


def test_modules_given_directly_take_the_gram_precision_to_their_hooks(two_cnns, monkeypatch):
    # compare() of modules and tensors records through its own extraction (no cache): --precision float32
    # must reach the hooks that form the Grams of flattened layers there too, as it does for named models.
    from cka_probe.capture import pooling

    seen = []
    original = pooling._gram  # flattened_gram's kernel, which the recorder's hooks call

    def recording(*args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("precision", "float64"))
        return original(*args, **kwargs)

    monkeypatch.setattr("cka_probe.capture.recorder._gram", recording)
    a, b, images = two_cnns
    result = compare(a, b, images, n=12, pool="flatten", precision="float32", progress=False, device="cpu")
    assert seen and set(seen) == {"float32"} and result.metadata["precision"] == "float32"
    # the provenance's number formats say the same as its precision
    assert result.metadata["dtype"] == (
        "flattened Grams float32 (summed in float64), CKA Grams and products float32, values float64"
    )
    exact = compare(a, b, images, n=12, pool="mean", progress=False, device="cpu")
    assert exact.metadata["dtype"] == "pooled features float32, CKA float64"


def test_a_tensor_handed_over_defines_n():
    """``compare(..., data=tensor_of_48)`` without n: the 48 images, not the probe sets' 128."""
    images = torch.rand(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = compare("test_resnet", "test_vit", images, weights="random", progress=False, device="cpu", cache=False)
    assert result.metadata["n"] == 48
    assert result.metadata["data"]["n"] == 48


def test_a_data_loader_handed_over_defines_n():
    images = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(20)), batch_size=6)
    result = compare("test_resnet", "test_vit", loader, weights="random", progress=False, device="cpu", cache=False)
    assert result.metadata["n"] == 20
    whole = compare("test_resnet", "test_vit", images, weights="random", progress=False, device="cpu", cache=False)
    pd.testing.assert_frame_equal(result.matrix, whole.matrix)


def test_an_n_larger_than_the_tensor_names_the_python_argument():
    images = torch.rand(12, 3, 32, 32)
    with pytest.raises(ShapeError, match=r"^n=16 but the tensor holds 12 images; pass n <= 12, or leave n out") as info:
        compare("test_resnet", "test_vit", images, n=16, weights="random", progress=False, device="cpu", cache=False)
    assert "-n" not in str(info.value).replace("n=16", "")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=5)
    with pytest.raises(ShapeError, match=r"^n=16 but the data loader yielded 12 images; pass n <= 12, or leave n out"):
        compare("test_resnet", "test_vit", loader, n=16, weights="random", progress=False, device="cpu", cache=False)


def test_a_source_without_n_takes_the_probe_sets_default():
    result = compare("test_resnet", "test_vit", "embedded", weights="random", progress=False, device="cpu", cache=False)
    assert result.metadata["n"] == 128


def test_side_values_give_what_the_keywords_give():
    """compare(Side(...), Side(...)) is the keyword call with each side's settings in one value; a Side's
    settings given as keywords as well are refused (one place per setting)."""
    from cka_probe.errors import ArgumentError
    from cka_probe.jobs import Side

    common = {"data": "synthetic", "n": 8, "weights": "random", "progress": False, "device": "cpu", "cache": False}
    by_keywords = compare(
        "test_resnet", "test_vit", seed_a=3, seed_b=4, layers_b="blocks.*.mlp.act", tokens_b="all", **common
    )  # fmt: skip
    by_sides = compare(
        Side("test_resnet", seed=3), Side("test_vit", seed=4, layers="blocks.*.mlp.act", tokens="all"), **common
    )
    assert by_sides.matrix.equals(by_keywords.matrix)
    for key in ("weights_seed", "layer_selection", "tokens", "models"):
        assert by_sides.metadata[key] == by_keywords.metadata[key], key
    with pytest.raises(ArgumentError, match=r"^model b is a Side: set seed in it rather than seed_b=$"):
        compare("test_resnet", Side("test_vit"), seed_b=2, **common)


def test_a_side_can_take_its_own_weights():
    """Side(weights=...) gives one side other weights than compare's (a network against itself at initialisation
    here: two seeds of random weights against one); the metadata records each side's."""
    from cka_probe.errors import CKAProbeError
    from cka_probe.jobs import Side

    common = {"data": "synthetic", "n": 8, "progress": False, "device": "cpu", "cache": False}
    mixed = compare(
        Side("test_resnet", weights="random", seed=1),
        Side("test_resnet", weights="random"),
        weights="pretrained",
        **common,
    )
    assert mixed.metadata["weights"] == {"a": "random", "b": "random"}
    assert mixed.metadata["weights_seed"] == {"a": 1, "b": 0}
    with pytest.raises(CKAProbeError, match="unknown weights 'imagenet'"):
        compare(Side("test_resnet", weights="imagenet"), "test_resnet", weights="random", **common)
