"""One model of every timm family, recorded and checked against this test's own hooks and pooling.

A *family* is a timm model module and the letters its model names start with
(``vision_transformer``/``vit``, ``metaformer``/``caformer``, ...): :func:`_timm_families` groups
``timm.list_models()`` so, and :data:`MODELS` names the model checked for each (the cheapest,
randomly initialised, often shrunk with ``depth=``-style arguments and run on small images).

Per model, independently of the package's selection, layout and prefix-token rules:

* **own hooks**: plain forward hooks on every activation module of :data:`OWN_ACTIVATIONS`
  (written out from torch's and timm's sources, gates left out, an activation nested in another one
  left out) record every call's output;
* **own layout**: the model runs at two input sizes ``s1 < s2``. The axes of an output whose size
  changes with the input are its positions, the others (after the batch axis) its channels; so
  ``NCHW``/``NHWC``/``NCL``/``NLC`` are read from the two shapes, never from the module's class.
  A token output's prefix tokens ``p`` solve ``T = p + g`` at both sizes with the patch count
  ``g`` growing as the image area: ``T2 - p = (s2 / s1)^2 (T1 - p)``. Where this cannot tell (a
  count that does not change with the input, PiT's unpadded grids), :data:`KNOWN` gives the layout
  or prefix read from the model's source;
* the recorder's features equal the own hooks' outputs pooled by hand in float64 (mean over the
  positions, prefix tokens left out), and ``tokens="cls"`` gives token 0 where ``p > 0`` and refuses
  with the layer's name where the layer has no class token;
* the model's output is bitwise the same with the recorder attached;
* every layer keeps the same number of features at both input sizes.

Families whose layers the package refuses are listed in :data:`OVERRIDES` with the
``PATTERN=LAYOUT`` override the test applies (through :func:`cka_probe.capture.parse_layouts`).
"""

from __future__ import annotations

import re
import warnings

import pytest
import timm
import torch
from timm.layers import activations as timm_act
from timm.layers import activations_me as timm_act_me
from timm.models import metaformer, nfnet
from torch import nn

from cka_probe.capture import FeatureRecorder, parse_layouts
from cka_probe.errors import LayerSelectionError

pytestmark = pytest.mark.slow

BATCH = 2

OWN_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.RReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Tanhshrink,
    nn.Softplus,
    nn.Softsign,
    nn.Tanh,
    nn.Threshold,
    nn.LogSigmoid,
    nn.GLU,
    timm_act.Swish,
    timm_act.Mish,
    timm_act.Tanh,
    timm_act.HardSwish,
    timm_act.HardMish,
    timm_act.PReLU,
    timm_act.GELU,
    timm_act.GELUTanh,
    timm_act.QuickGELU,
    timm_act_me.SwishMe,
    timm_act_me.MishMe,
    timm_act_me.HardSwishMe,
    timm_act_me.HardMishMe,
    metaformer.StarReLU,
    metaformer.SquaredReLU,
    nfnet.GammaAct,
)
"""Elementwise activations, from torch.nn's and timm's sources; gates (sigmoids, softmax) are not here."""

# family -> model, keyword arguments for timm.create_model, the two input sizes, and whether the
# model needs img_size= for each size (a model per size, the same seed).
MODELS: dict[str, tuple[str, dict, tuple[int, int], bool]] = {
    "beit/beit": ("beit_base_patch16_224", {"depth": 2}, (64, 96), True),
    "beit/beitv": ("beitv2_base_patch16_224", {"depth": 2}, (64, 96), True),
    "byoanet/botnet": ("botnet26t_256", {}, (64, 96), True),
    "byoanet/eca": ("eca_botnext26ts_256", {}, (64, 96), True),
    "byoanet/halo": ("halo2botnet50ts_256", {}, (128, 256), True),
    "byoanet/halonet": ("halonet26t", {"self_attn_kwargs": {"block_size": 2, "halo_size": 1}}, (64, 128), False),
    "byoanet/haloregnetz": ("haloregnetz_b", {"self_attn_kwargs": {"block_size": 2, "halo_size": 1}}, (64, 128), False),
    "byoanet/lambda": ("lambda_resnet26t", {}, (64, 96), True),
    "byoanet/lamhalobotnet": ("lamhalobotnet50ts_256", {}, (128, 256), True),
    "byoanet/sebotnet": ("sebotnet33ts_256", {}, (64, 96), True),
    "byoanet/sehalonet": ("sehalonet33ts", {"self_attn_kwargs": {"block_size": 2, "halo_size": 1}}, (64, 128), False),
    "byobnet/bat": ("bat_resnext26ts", {"attn_kwargs": {"block_size": 2}}, (64, 128), False),
    "byobnet/eca": ("eca_resnext26ts", {}, (64, 96), True),
    "byobnet/gcresnet": ("gcresnet33ts", {}, (64, 96), True),
    "byobnet/gcresnext": ("gcresnext26ts", {}, (64, 96), True),
    "byobnet/gernet": ("gernet_s", {}, (64, 96), True),
    "byobnet/mobileone": ("mobileone_s1", {}, (64, 96), True),
    "byobnet/regnetz": ("regnetz_b16", {}, (64, 96), True),
    "byobnet/repvgg": ("repvgg_a0", {}, (64, 96), True),
    "byobnet/resnet": ("resnet32ts", {}, (64, 96), True),
    "byobnet/resnext": ("resnext26ts", {}, (64, 96), True),
    "byobnet/seresnet": ("seresnet33ts", {}, (64, 96), True),
    "byobnet/seresnext": ("seresnext26ts", {}, (64, 96), True),
    "byobnet/test": ("test_byobnet", {}, (64, 96), True),
    "cait/cait": ("cait_xxs24_224", {}, (64, 96), True),
    "coat/coat": ("coat_tiny", {}, (64, 96), True),
    "convit/convit": ("convit_tiny", {}, (64, 96), True),
    "convmixer/convmixer": ("convmixer_768_32", {}, (64, 96), False),
    "convnext/convnext": ("convnext_zepto_rms", {}, (64, 96), False),
    "convnext/convnextv": ("convnextv2_atto", {}, (64, 96), False),
    "convnext/test": ("test_convnext", {}, (64, 96), False),
    "cpubone/cpubone": ("cpubone_nano", {}, (64, 96), False),
    "crossvit/crossvit": ("crossvit_tiny_240", {}, (64, 96), False),
    "csatv2/csatv": ("csatv2", {}, (128, 192), False),  # stride 64: 1x1 maps at 64 and 96 px
    "cspnet/cs": ("cs3darknet_focus_s", {}, (64, 96), False),
    "cspnet/cspdarknet": ("cspdarknet53", {}, (64, 96), False),
    "cspnet/cspresnet": ("cspresnet50", {}, (64, 96), False),
    "cspnet/cspresnext": ("cspresnext50", {}, (64, 96), False),
    "cspnet/darknet": ("darknet17", {}, (64, 96), False),
    "cspnet/darknetaa": ("darknetaa53", {}, (64, 96), False),
    "cspnet/sedarknet": ("sedarknet21", {}, (64, 96), False),
    "cspnext/cspnext": ("cspnext_tiny", {}, (64, 96), False),
    "davit/davit": ("davit_tiny", {}, (64, 96), False),
    "deepseek_vit/deepseek": ("deepseek_vit_412m", {"depth": 2}, (56, 84), True),
    "deit/deit": ("deit_tiny_patch16_224", {}, (64, 96), True),
    "densenet/densenet": ("densenet121", {}, (64, 96), False),
    "densenet/densenetblur": ("densenetblur121d", {}, (64, 96), False),
    "dla/dla": ("dla46x_c", {}, (64, 96), False),
    "dpn/dpn": ("dpn48b", {}, (64, 96), False),
    "edgenext/edgenext": ("edgenext_xx_small", {}, (64, 96), False),
    "efficientformer/efficientformer": ("efficientformer_l1", {}, (224, 224), False),  # one size only
    "efficientformer_v2/efficientformerv": ("efficientformerv2_s0", {}, (64, 96), True),
    "efficientnet/efficientnet": ("efficientnet_lite0", {}, (64, 96), False),
    "efficientnet/efficientnetv": ("efficientnetv2_rw_t", {}, (64, 96), False),
    "efficientnet/fbnetc": ("fbnetc_100", {}, (64, 96), False),
    "efficientnet/gc": ("gc_efficientnetv2_rw_t", {}, (64, 96), False),
    "efficientnet/mixnet": ("mixnet_s", {}, (64, 96), False),
    "efficientnet/mnasnet": ("mnasnet_small", {}, (64, 96), False),
    "efficientnet/mobilenet": ("mobilenet_edgetpu_100", {}, (64, 96), False),
    "efficientnet/mobilenetv": ("mobilenetv2_035", {}, (64, 96), False),
    "efficientnet/semnasnet": ("semnasnet_050", {}, (64, 96), False),
    "efficientnet/spnasnet": ("spnasnet_100", {}, (64, 96), False),
    "efficientnet/test": ("test_efficientnet", {}, (64, 96), False),
    "efficientnet/tf": ("tf_mixnet_s", {}, (64, 96), False),
    "efficientnet/tinynet": ("tinynet_e", {}, (64, 96), False),
    "efficientvim/efficientvim": ("efficientvim_m1", {}, (64, 96), False),
    "efficientvit_mit/efficientvit": ("efficientvit_b0", {}, (64, 96), False),
    "efficientvit_msra/efficientvit": ("efficientvit_m0", {}, (64, 96), True),
    "eva/eva": ("eva02_tiny_patch14_224", {}, (64, 96), True),
    "eva/vit": ("vit_tiny_patch16_dinov3_qkvb", {}, (64, 96), True),
    "fasternet/fasternet": ("fasternet_t0", {}, (64, 96), False),
    "fastvit/fastvit": ("fastvit_t8", {}, (64, 96), False),
    "focalnet/focalnet": ("focalnet_tiny_srf", {}, (64, 96), False),
    "gcvit/gcvit": ("gcvit_xxtiny", {}, (64, 96), True),
    "gemma4_vit/gemma": ("gemma4_vit_167m", {"depth": 2}, (64, 96), True),
    "ghostnet/ghostnet": ("ghostnet_050", {}, (64, 96), False),
    "ghostnet/ghostnetv": ("ghostnetv3_050", {}, (64, 96), False),
    "hardcorenas/hardcorenas": ("hardcorenas_b", {}, (64, 96), False),
    "hgnet/hgnet": ("hgnet_tiny", {}, (64, 96), False),
    "hgnet/hgnetv": ("hgnetv2_b0", {}, (64, 96), False),
    "hiera/hiera": ("hiera_tiny_224", {}, (64, 96), True),
    "hieradet_sam2/hieradet": ("hieradet_small", {}, (64, 96), False),
    "hieradet_sam2/sam": ("sam2_hiera_tiny", {}, (64, 96), False),
    "hrnet/hrnet": ("hrnet_w18_small", {}, (64, 96), False),
    "iformer/iformer": ("iformer_t", {}, (64, 96), False),
    "inception_next/inception": ("inception_next_atto", {}, (64, 96), False),
    "inception_resnet_v2/inception": ("inception_resnet_v2", {}, (96, 128), False),
    "inception_v3/inception": ("inception_v3", {}, (96, 128), False),
    "inception_v4/inception": ("inception_v4", {}, (96, 128), False),
    "lcnetv2/lcnetv": ("lcnetv2_small", {}, (64, 96), False),
    "levit/levit": ("levit_128s", {}, (128, 192), True),  # stride 64 after the last subsampling
    "lowformer/lowformer": ("lowformer_b0", {}, (64, 96), False),
    "mambaout/mambaout": ("mambaout_femto", {}, (64, 96), False),
    "mambaout/test": ("test_mambaout", {}, (64, 96), False),
    "maxxvit/coatnet": ("coatnet_pico_rw_224", {}, (64, 96), True),
    "maxxvit/coatnext": ("coatnext_nano_rw_224", {}, (64, 96), True),
    "maxxvit/maxvit": ("maxvit_pico_rw_256", {}, (64, 96), True),
    "maxxvit/maxxvit": ("maxxvit_rmlp_nano_rw_256", {}, (64, 96), True),
    "maxxvit/maxxvitv": ("maxxvitv2_nano_rw_256", {}, (64, 96), True),
    "maxxvit/test": ("test_coatnet", {}, (64, 96), True),
    "metaformer/caformer": ("caformer_s18", {}, (64, 96), False),
    "metaformer/convformer": ("convformer_s18", {}, (64, 96), False),
    "metaformer/poolformer": ("poolformer_s12", {}, (64, 96), False),
    "metaformer/poolformerv": ("poolformerv2_s12", {}, (64, 96), False),
    "mlp_mixer/gmixer": ("gmixer_12_224", {}, (64, 96), True),
    "mlp_mixer/gmlp": ("gmlp_ti16_224", {}, (64, 96), True),
    "mlp_mixer/mixer": ("mixer_s16_224", {}, (64, 96), True),
    "mlp_mixer/resmlp": ("resmlp_12_224", {}, (64, 96), True),
    "mobilenetv3/fbnetv": ("fbnetv3_b", {}, (64, 96), False),
    "mobilenetv3/lcnet": ("lcnet_035", {}, (64, 96), False),
    "mobilenetv3/mobilenetv": ("mobilenetv3_small_050", {}, (64, 96), False),
    "mobilenetv3/tf": ("tf_mobilenetv3_small_075", {}, (64, 96), False),
    "mobilenetv5/mobilenetv": ("mobilenetv5_base", {}, (64, 96), False),
    "mobilevit/mobilevit": ("mobilevit_xxs", {}, (64, 96), True),
    "mobilevit/mobilevitv": ("mobilevitv2_050", {}, (64, 96), True),
    "mvitv2/mvitv": ("mvitv2_tiny", {}, (64, 96), True),
    "naflexvit/naflexvit": ("naflexvit_base_patch16_parfac_gap", {"depth": 2}, (64, 96), False),
    "nasnet/nasnetalarge": ("nasnetalarge", {"num_features": 2016}, (32, 64), False),
    "nest/nest": ("nest_tiny", {}, (64, 96), True),
    "nextvit/nextvit": ("nextvit_small", {}, (64, 96), False),
    "nfnet/dm": ("dm_nfnet_f0", {"depths": (1, 1, 1, 1)}, (64, 96), False),
    "nfnet/eca": ("eca_nfnet_l0", {}, (64, 96), False),
    "nfnet/nf": ("nf_regnet_b0", {}, (64, 96), False),
    "nfnet/nfnet": ("nfnet_l0", {}, (64, 96), False),
    "nfnet/test": ("test_nfnet", {}, (64, 96), False),
    "pit/pit": ("pit_ti_224", {}, (64, 96), True),
    "pnasnet/pnasnet": ("pnasnet5large", {}, (32, 64), False),
    "pvt_v2/pvt": ("pvt_v2_b0", {}, (64, 96), False),
    "qwen3_vit/qwen": ("qwen3_vit_88m", {"depth": 2}, (64, 96), False),
    "rdnet/rdnet": ("rdnet_tiny", {}, (64, 96), False),
    "regnet/regnetv": ("regnetv_040", {}, (64, 96), False),
    "regnet/regnetx": ("regnetx_002", {}, (64, 96), False),
    "regnet/regnety": ("regnety_002", {}, (64, 96), False),
    "regnet/regnetz": ("regnetz_005", {}, (64, 96), False),
    "repghost/repghostnet": ("repghostnet_050", {}, (64, 96), False),
    "repvit/repvit": ("repvit_m1", {}, (64, 96), True),
    "res2net/res": ("res2next50", {}, (64, 96), False),
    "resnest/resnest": ("resnest14d", {}, (64, 96), False),
    "resnet/ecaresnet": ("ecaresnet26t", {}, (64, 96), False),
    "resnet/ecaresnetlight": ("ecaresnetlight", {}, (64, 96), False),
    "resnet/ecaresnext": ("ecaresnext26t_32x4d", {}, (64, 96), False),
    "resnet/resnet": ("resnet10t", {}, (64, 96), False),
    "resnet/resnetaa": ("resnetaa34d", {}, (64, 96), False),
    "resnet/resnetblur": ("resnetblur18", {}, (64, 96), False),
    "resnet/resnetrs": ("resnetrs50", {}, (64, 96), False),
    "resnet/resnext": ("resnext50_32x4d", {}, (64, 96), False),
    "resnet/senet": ("senet154", {"layers": (1, 1, 1, 1)}, (64, 96), False),
    "resnet/seresnet": ("seresnet18", {}, (64, 96), False),
    "resnet/seresnetaa": ("seresnetaa50d", {}, (64, 96), False),
    "resnet/seresnext": ("seresnext26t_32x4d", {}, (64, 96), False),
    "resnet/seresnextaa": ("seresnextaa101d_32x8d", {"layers": (1, 1, 1, 1)}, (64, 96), False),
    "resnet/test": ("test_resnet", {}, (64, 96), False),
    "resnet/wide": ("wide_resnet50_2", {"layers": (1, 1, 1, 1)}, (64, 96), False),
    "resnetv2/resnetv": ("resnetv2_18", {}, (64, 96), False),
    "rexnet/rexnet": ("rexnet_100", {}, (64, 96), False),
    "rexnet/rexnetr": ("rexnetr_100", {}, (64, 96), False),
    "selecsls/selecsls": ("selecsls42", {}, (64, 96), False),
    "senet/legacy": ("legacy_seresnet18", {}, (64, 96), False),
    "sequencer/sequencer": ("sequencer2d_s", {}, (64, 96), True),
    "shvit/shvit": ("shvit_s1", {}, (64, 96), False),
    "sknet/skresnet": ("skresnet18", {}, (64, 96), False),
    "sknet/skresnext": ("skresnext50_32x4d", {}, (64, 96), False),
    "starnet/starnet": ("starnet_s050", {}, (64, 96), False),
    "swiftformer/swiftformer": ("swiftformer_xs", {}, (64, 96), True),
    "swin_transformer/swin": ("swin_tiny_patch4_window7_224", {}, (64, 96), True),
    "swin_transformer_v2/swinv": ("swinv2_tiny_window16_256", {}, (64, 96), True),
    "swin_transformer_v2_cr/swinv": ("swinv2_cr_tiny_224", {}, (64, 96), True),
    "tiny_vit/tiny": ("tiny_vit_5m_224", {}, (64, 96), False),
    "tnt/tnt": ("tnt_s_legacy_patch16_224", {}, (64, 96), True),
    "tresnet/tresnet": ("tresnet_m", {}, (64, 96), False),
    "twins/twins": ("twins_svt_small", {}, (64, 96), True),
    "vgg/vgg": ("vgg11", {"mlp_ratio": 0.125}, (64, 96), False),
    "visformer/visformer": ("visformer_tiny", {}, (64, 96), True),
    "vision_transformer/aimv": ("aimv2_large_patch14_224", {"depth": 2}, (56, 84), True),
    "vision_transformer/beit": ("beit3_base_patch16_224", {"depth": 2}, (64, 96), True),
    "vision_transformer/eva": ("eva_large_patch14_196", {"depth": 2}, (56, 84), True),
    "vision_transformer/flexivit": ("flexivit_small", {}, (64, 96), True),
    "vision_transformer/test": ("test_vit", {}, (64, 96), True),
    "vision_transformer/vit": ("vit_tiny_patch16_224", {}, (64, 96), True),
    "vision_transformer_hybrid/vit": ("vit_tiny_r_s16_p8_224", {}, (64, 96), True),
    "vision_transformer_relpos/test": ("test_vit_relpos", {}, (64, 96), True),
    "vision_transformer_relpos/vit": ("vit_srelpos_small_patch16_224", {}, (64, 96), True),
    "vision_transformer_sam/samvit": ("samvit_base_patch16_224", {"depth": 2}, (64, 96), True),
    "vitamin/vitamin": ("vitamin_small_224", {}, (64, 96), True),
    "volo/volo": ("volo_d1_224", {}, (64, 96), True),
    "vovnet/eca": ("eca_vovnet39b", {}, (64, 96), False),
    "vovnet/ese": ("ese_vovnet19b_slim_dw", {}, (64, 96), False),
    "vovnet/vovnet": ("vovnet39a", {}, (64, 96), False),
    "xception/legacy": ("legacy_xception", {}, (64, 96), False),
    "xception_aligned/xception": ("xception41p", {}, (64, 96), False),
    "xcit/xcit": ("xcit_nano_12_p8_224", {}, (64, 96), True),
}

# family -> {glob on layer names: (layout, prefix tokens)}: layers whose layout or prefix the two
# input sizes cannot tell, read from the model's source.
KNOWN: dict[str, dict[str, tuple[str, int]]] = {
    # cait.py: ClassAttn blocks run their MLP on the class token alone, x_cls of shape (B, 1, C)
    "cait/cait": {"blocks_token_only.*": ("NLC", 1)},
    # xcit.py ClassAttentionBlock: cls_token = self.gamma2 * self.mlp(x[:, 0:1])
    "xcit/xcit": {"cls_attn_blocks.*.mlp.*": ("NLC", 1)},
    # crossvit.py resizes every input to its img_size, so token counts do not change with the input:
    # each branch is [cls_token, patches]; projs/revert_projs act on the class token alone
    "crossvit/crossvit": {
        "blocks.*.projs.*": ("NLC", 1),
        "blocks.*.revert_projs.*": ("NLC", 1),
        "blocks.*": ("NLC", 1),
    },
    # pit.py: unpadded conv embedding ((s - 16) // 8 + 1 per side), then torch.cat((cls_tokens, x), dim=1)
    "pit/pit": {"transformers.*": ("NLC", 1)},
    # volo.py post_network: ClassBlock, whose MLP runs on the class token alone: self.mlp(self.norm2(cls_embed))
    "volo/volo": {"post_network.*.mlp.*": ("NLC", 1)},
    # mlp_mixer.py MixerBlock: mlp_tokens(norm1(x).transpose(1, 2)): (B, C, tokens -> hidden), a fixed width
    "mlp_mixer/mixer": {"blocks.*.mlp_tokens.*": ("NCL", 0)},
    "mlp_mixer/gmixer": {"blocks.*.mlp_tokens.*": ("NCL", 0)},
    # mobilevit.py MobileVitV2Block: unfold to (B, C, patch_area, num_patches), then 1x1-conv MLPs
    "mobilevit/mobilevitv": {"stages.*.transformer.*.mlp.*": ("NCHW", 0)},
    # nest.py: blockify to (B, blocks, tokens per block, C), transformer layers on the last axis
    "nest/nest": {"levels.*.transformer_encoder.*": ("NHWC", 0)},
    # efficientvim.py HSM-SSD: z from hz_proj (ConvLayer1d) on the hidden state h = x @ ab^T, (B, C, state_dim)
    "efficientvim/efficientvim": {"stages.*.blocks.*.mixer.act": ("NCL", 0)},
    # csatv2.py SpatialAttention: AdaptiveAvgPool2d((7, 7)), then an MLP on the 49 tokens of 1 -> 4 channels
    "csatv2/csatv": {"stages.*.attn.attn.mlp.*": ("NLC", 0)},
    # efficientformer.py runs at its one img_size (attention biases for a 7x7 grid): Stem4 and MetaBlock2d
    # are conv nets; the last block (num_vit=1) is a MetaBlock1d on Flat() tokens
    "efficientformer/efficientformer": {"stages.3.blocks.4.*": ("NLC", 0), "*": ("NCHW", 0)},
}

# family -> PATTERN=LAYOUT overrides, for layers the package refuses. None is refused at these sizes (nor at
# each model's default input size); test_recorder.py and test_tokens.py check that suggested fixes work.
OVERRIDES: dict[str, list[str]] = {}

# family -> why it is not run. Every family runs.
SKIPPED: dict[str, str] = {}


def _timm_families() -> dict[str, list[str]]:
    from timm.models import _registry

    families: dict[str, list[str]] = {}
    for name in timm.list_models():
        if not _registry.model_entrypoint(name).__module__.startswith("timm."):
            continue  # registered by another package (cka_probe.ofa's Swin variants)
        stem = re.match(r"[a-z]+", name).group(0)
        families.setdefault(f"{_registry._model_to_module[name]}/{stem}", []).append(name)
    return families


def test_every_timm_family_has_a_model_or_a_reason():
    families = _timm_families()
    assert set(MODELS) | set(SKIPPED) == set(families)
    assert not set(MODELS) & set(SKIPPED)
    for family, (name, *_rest) in MODELS.items():
        assert name in families[family], (family, name)


# --------------------------------------------------------------------------- the test's own hooks


def _own_activation_names(model: nn.Module) -> list[str]:
    from timm.layers.pos_embed_rel import RelPosMlp

    names = [n for n, m in model.named_modules() if n and isinstance(m, OWN_ACTIVATIONS)]
    # input-independent position-bias tables (RelPosMlp, Swin V2's cpb_mlp, swin_transformer_v2_cr.py's
    # meta_mlp(self.relative_coordinates_log)), and efficientvit_mit.py's
    # LiteMLA kernel_func: relu(q), relu(k) on (B, heads, tokens, head_dim), attention weights
    bias = [
        n
        for n, m in model.named_modules()
        if isinstance(m, RelPosMlp) or n.endswith((".cpb_mlp", ".meta_mlp", ".kernel_func"))
    ]
    chosen = set(names)

    def inside(name: str, outer: set[str] | list[str]) -> bool:
        return any(name.startswith(o + ".") for o in outer)

    return [n for n in names if n not in bias and not inside(n, bias) and not inside(n, chosen)]


class OwnHooks:
    """Every call of every activation module: name -> list of cloned outputs."""

    def __init__(self, model: nn.Module):
        self.names = _own_activation_names(model)
        self.outputs: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        self.order: list[str] = []
        self.handles = [
            model.get_submodule(n).register_forward_hook(lambda m, a, out, n=n: self._keep(n, out)) for n in self.names
        ]

    def _keep(self, name: str, out: torch.Tensor) -> None:
        self.outputs[name].append(out.detach().clone())
        count = len(self.outputs[name])
        self.order.append(name if count == 1 else f"{name}#{count}")

    def output(self, label: str) -> torch.Tensor:
        name, _, call = label.partition("#")
        return self.outputs[name][int(call or 1) - 1]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _own_layout(label: str, small: torch.Tensor, large: torch.Tensor, sizes, known) -> tuple[str, int]:
    """Layout and prefix tokens of one output from its shapes at the two input sizes."""
    for pattern, answer in known.items():
        if re.fullmatch(pattern.replace(".", r"\.").replace("*", ".*"), label.partition("#")[0]):
            return answer
    if small.ndim == 2:
        return "NC", 0
    changes = [d for d in range(1, small.ndim) if small.shape[d] != large.shape[d]]
    if small.ndim == 4 and small.shape[2:] == large.shape[2:] == (1, 1):
        return "NCHW", 0  # squeeze-excite: x.mean((2, 3), keepdim=True) then 1x1 convolutions
    if small.ndim == 4 and changes == [2, 3]:
        return "NCHW", 0
    if small.ndim == 4 and changes == [1, 2]:
        return "NHWC", 0
    if small.ndim == 3 and changes == [2]:
        return "NCL", 0
    if small.ndim == 3 and changes == [1]:
        t1, t2 = small.shape[1], large.shape[1]
        ratio = (sizes[1] / sizes[0]) ** 2
        prefix = (ratio * t1 - t2) / (ratio - 1)
        if abs(prefix - round(prefix)) < 1e-9 and 0 <= round(prefix) <= 8:
            return "NLC", round(prefix)
    raise AssertionError(
        f"{label}: shapes {tuple(small.shape)} and {tuple(large.shape)} do not tell the layout; add it to KNOWN"
    )


def _pool(x: torch.Tensor, layout: str, prefix: int) -> torch.Tensor:
    x = x.to(torch.float64)
    axes = {"NC": (), "NCHW": (2, 3), "NHWC": (1, 2), "NCL": (2,), "NLC": (1,)}[layout]
    if layout == "NLC":
        x = x[:, prefix:]
    return x.mean(dim=axes) if axes else x


# --------------------------------------------------------------------------- the sweep


def _make(family: str, size: int) -> nn.Module:
    name, kwargs, _sizes, needs_img_size = MODELS[family]
    torch.manual_seed(0)
    extra = {"img_size": size} if needs_img_size else {}
    return timm.create_model(name, pretrained=False, **kwargs, **extra).eval()


def _run(model, x, layouts, tokens="patch"):
    own = OwnHooks(model)
    recorder = FeatureRecorder(model, tokens=tokens, layouts=layouts)
    try:
        with recorder, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(x)
    finally:
        own.remove()
    return own, recorder, out


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


@pytest.mark.parametrize("family", sorted(MODELS))
def test_family_is_recorded_right(family):
    torch.set_num_threads(1)
    _, _, sizes, needs_img_size = MODELS[family]
    layouts = parse_layouts(OVERRIDES.get(family, []))
    known = KNOWN.get(family, {})
    gen = torch.Generator().manual_seed(0)
    models = (
        {size: _make(family, size) for size in sizes}
        if needs_img_size
        else dict.fromkeys(sizes, _make(family, sizes[0]))
    )
    inputs = {size: torch.randn(BATCH, 3, size, size, generator=gen) for size in sizes}
    runs = {size: _run(models[size], inputs[size], layouts) for size in sizes}
    small, large = sizes

    # (b) the output is bitwise unchanged by the recorder
    with torch.no_grad():
        plain = _first(models[small](inputs[small]))
    assert torch.equal(_first(runs[small][2]), plain)

    own_small, rec_small, _ = runs[small]
    own_large, rec_large, _ = runs[large]
    expected = {}
    for label in own_small.order:
        out = own_small.output(label)
        if out.ndim == 0 or out.shape[0] != BATCH:
            continue  # not one row per image
        expected[label] = _own_layout(label, out, own_large.output(label), sizes, known)
    per_image = [label for label in own_small.order if label in expected]
    class_only = [
        label
        for label in per_image
        if expected[label][0] == "NLC" and own_small.output(label).shape[1] == expected[label][1]
    ]
    # (a) the same layers, in the same order, as the test's own selection
    assert list(rec_small.layers) == [label for label in per_image if label not in class_only]
    assert set(rec_small.skipped) == set(own_small.order) - set(rec_small.layers)
    for label in rec_small.layers:
        layout, prefix = expected[label]
        decided = rec_small.layouts[label]
        assert (decided.layout, decided.prefix_tokens) == (layout, prefix), (label, decided.source)
        reference = _pool(own_small.output(label), layout, prefix)
        torch.testing.assert_close(rec_small.features[label].double(), reference, rtol=1e-4, atol=1e-5)
        # (c) the kept (channel) axis does not change with the input size
        assert rec_large.features[label].shape == rec_small.features[label].shape == (BATCH, reference.shape[1])
        large_layout = _own_layout(label, own_small.output(label), own_large.output(label), sizes, known)
        torch.testing.assert_close(
            rec_large.features[label].double(), _pool(own_large.output(label), *large_layout), rtol=1e-4, atol=1e-5
        )

    # tokens="cls": the class token where the layer has one, a refusal naming the first layer without
    token_layers = [label for label in per_image if expected[label][0] == "NLC"]
    if any(expected[label][1] for label in token_layers):
        no_class = [label for label in token_layers if expected[label][1] == 0]
        if no_class:
            with pytest.raises(LayerSelectionError, match=rf"^layer {re.escape(no_class[0])} has no class token"):
                _run(models[small], inputs[small], layouts, tokens="cls")
        else:
            own, rec, _ = _run(models[small], inputs[small], layouts, tokens="cls")
            for label in token_layers:
                torch.testing.assert_close(rec.features[label], own.output(label)[:, 0].float())
