"""Writes swin_timm06_tiny.pth and swin_timm06_tiny_logits.pt with timm 0.6.13 (the old Swin checkpoint layout).

Run once, with timm 0.6.13 first on the path (``pip install --no-deps --target /tmp/timm06 timm==0.6.13``):

    PYTHONPATH=/tmp/timm06 python tests/models/data/make_swin_timm06.py

The checkpoint is wrapped under ``"model"`` as Microsoft's Swin releases are; the logits of a fixed input
are what timm 0.6 computes with these weights, so a loader that converts the layout must reproduce them.
"""

from pathlib import Path


def main() -> None:
    import timm
    import torch
    from timm.models.swin_transformer import SwinTransformer

    assert timm.__version__.startswith("0.6"), timm.__version__
    here = Path(__file__).parent
    torch.manual_seed(0)
    model = SwinTransformer(
        img_size=32, patch_size=4, window_size=2, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
        num_classes=10,
    ).eval()  # fmt: skip
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
    torch.save({"model": model.state_dict()}, here / "swin_timm06_tiny.pth")
    torch.save({"images": images, "logits": logits, "timm": timm.__version__}, here / "swin_timm06_tiny_logits.pt")


if __name__ == "__main__":
    main()
