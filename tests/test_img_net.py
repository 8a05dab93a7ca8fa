"""G's last layer (attngan_fast.ops.img_conv_tanh) against its reference twin and GET_IMAGE_G's modules.

Compared: output and the gradients of the input and the weight (NCHW and channels_last, only one of
them wanted), float64 gradcheck and gradgradcheck, opcheck, fullgraph compile, low precision, bad input.
"""

import pytest
import torch

from attngan_fast import reference
from attngan_fast.models import GET_IMAGE_G
from attngan_fast.ops import img_conv_tanh
from tests.kernel_checks import assert_close, assert_low_precision_ok
from tests.test_blocks import compare, compare_compiled_train_step, input_like

ops = torch.ops.attngan_fast


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 3, 7, 5), (1, 3, 3, 1, 1), (3, 32, 3, 16, 16), (2, 5, 4, 9, 4)])
def test_matches_the_module(shape, channels_last):
    n, ci, co, h, w = shape
    layer = GET_IMAGE_G(ci)
    if co != 3:
        layer.img[0] = torch.nn.Conv2d(ci, co, 3, 1, 1, bias=False)
    if channels_last and (h, w) == (1, 1):
        pytest.skip("a 1x1 map has both formats' strides")
    compare(layer, input_like(n, ci, h, w, channels_last))


def test_one_gradient_wanted():
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, requires_grad=True)
    grad = torch.randn(2, 3, 6, 5)
    for wanted in (x, w):
        (g,) = torch.autograd.grad(img_conv_tanh(x, w), [wanted], grad)
        (g_ref,) = torch.autograd.grad(reference.img_conv_tanh(x, w), [wanted], grad)
        assert_close(g, g_ref)


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 3, 3, 3, dtype=torch.float64, requires_grad=True) * 0.3
    w = w.detach().requires_grad_()
    assert torch.autograd.gradcheck(img_conv_tanh, (x, w))
    assert torch.autograd.gradgradcheck(img_conv_tanh, (x, w))


def test_opcheck():
    for channels_last in (False, True):
        x = input_like(2, 4, 6, 5, channels_last).requires_grad_()
        w = torch.randn(3, 4, 3, 3, requires_grad=True)
        torch.library.opcheck(ops.img_conv_tanh, (x, w))
        out = ops.img_conv_tanh(x, w).detach()
        for need in ((True, True), (True, False), (False, True)):
            torch.library.opcheck(ops.img_conv_tanh_backward, (torch.randn_like(out), x.detach(), w.detach(), out, *need))


def test_compile_fullgraph():
    compare_compiled_train_step(GET_IMAGE_G(4), torch.randn(2, 4, 8, 8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    x, w = torch.randn(2, 8, 6, 5), torch.randn(3, 8, 3, 3) * 0.3
    fast = img_conv_tanh(x.to(dtype), w.to(dtype))
    plain = reference.img_conv_tanh(x.to(dtype), w.to(dtype))
    exact = reference.img_conv_tanh(x.double(), w.double())
    assert fast.dtype == dtype
    assert_low_precision_ok(fast, plain, exact, name="img_conv_tanh")


def test_autocast():
    x, w = torch.randn(2, 8, 6, 5), torch.randn(3, 8, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = img_conv_tanh(x, w), reference.img_conv_tanh(x, w)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_bad_input():
    x = torch.randn(2, 4, 6, 6)
    with pytest.raises(ValueError, match=r"x: expected \(N, C, H, W\)"):
        img_conv_tanh(torch.randn(4, 6, 6), torch.randn(3, 4, 3, 3))
    with pytest.raises(ValueError, match=r"weight: expected \(Co, 4, 3, 3\)"):
        img_conv_tanh(x, torch.randn(3, 4, 5, 5))
    with pytest.raises(TypeError, match="weight: expected dtype torch.float32"):
        img_conv_tanh(x, torch.randn(3, 4, 3, 3, dtype=torch.float64))
