"""A torchvision checkpoint of the same architecture loads strictly into ours and computes the same function."""
from functools import partial

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from backbones import build_backbone

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# (our name, torchvision builder, input side: VGG needs 32+ px, the others run on 64)
CASES = [
    *[(f"vgg{d}{bn}", getattr(tvm, f"vgg{d}{bn}"), 32) for d in (11, 13, 16, 19) for bn in ("", "_bn")],
    *[(f"resnet{d}", getattr(tvm, f"resnet{d}"), 64) for d in (18, 34, 50, 101, 152)],
    ("googlenet_bn", partial(tvm.googlenet, aux_logits=True, init_weights=True), 64),
]


def calibrate_batch_norm(model: nn.Module, size: int) -> None:
    """Set BN running statistics from a random batch, so BN layers are not near-identities in eval mode
    (with the init's mean 0 / var 1 a missing or misplaced BN would go unnoticed)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


@pytest.mark.parametrize("name,torchvision_builder,size", CASES, ids=[c[0] for c in CASES])
def test_torchvision_checkpoint_loads_strictly_and_gives_identical_outputs(name, torchvision_builder, size):
    torch.manual_seed(0)
    reference = torchvision_builder(weights=None)
    for module in reference.modules():  # torchvision zero-inits biases: give them values that matter
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.normal_(module.bias, 0.0, 0.01)
    calibrate_batch_norm(reference, size)
    with torch.device("meta"):  # our build costs nothing: every tensor comes from torchvision's state_dict
        ours = build_backbone(name)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert actual.shape == expected.shape == (2, 1000)
    assert expected.std() > 1e-3, "the reference output is ~constant: the comparison would prove nothing"
    assert (actual - expected).abs().max().item() <= 1e-5
