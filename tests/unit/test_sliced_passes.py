"""The server's passes that work a cache-sized slice at a time give the same bits as the same arithmetic on the
whole tensor: the σ sums, the zero-sum noise with θ added, the RoPE-plane rotation, a read converted as it is
read. Each reference below is the whole-tensor formula, written out here; the tensors are larger than a slice."""
from __future__ import annotations

import math

import torch

from mpu_cli.models.files import open_file
from mpu_cli.mpu import noise as nz
from mpu_cli.mpu import reparam
from mpu_cli.transport import exchange as ex


def _whole_sq_sum(t: torch.Tensor, ref: torch.Tensor | None) -> float:
    a, total = t.reshape(-1), 0.0
    b = None if ref is None else ref.reshape(-1)
    for i in range(0, a.numel(), nz._CHUNK):
        v = a[i : i + nz._CHUNK].to(torch.float64, copy=True)
        if b is not None:
            v.sub_(b[i : i + nz._CHUNK].double())
        total += float(v.square_().sum())
    return total


def test_sigma_sums_equal_the_whole_chunk_formula_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for shape in ((7,), (3000, 7), (nz._CHUNK + 5,)):  # below a slice, several slices, two chunks
        t, base = torch.randn(shape, generator=g) * 0.02, torch.randn(shape, generator=g) * 0.02
        assert nz._sq_sum(t, None) == _whole_sq_sum(t, None)
        assert nz._sq_sum(t, base) == _whole_sq_sum(t, base)


def test_zero_sum_copy_with_theta_added_equals_the_whole_tensor_arithmetic():
    g = torch.Generator().manual_seed(1)
    shape, seeds = (700, 300), [11, 12, 13]
    x = torch.randn(shape, generator=g)
    for common in (None, (0.5, 99)):
        for keep in (True, False):
            noise = nz.ZeroSumNoise(shape, 0.1, seeds, keep=keep, common=common)
            z = [nz.gaussian(shape, 0.1, s) for s in seeds]
            mean = torch.zeros(shape).add_(z[0]).add_(z[1]).add_(z[2]).div_(3)
            for k, alpha in enumerate((1.0, 1.5, 2.0)):
                want = z[k].clone().sub_(mean).mul_(math.sqrt(3 / 2) * alpha)
                if common is not None:
                    want.add_(nz.gaussian(shape, *common))
                assert torch.equal(noise.copy(k, alpha, plus=x), want.add_(x)), (common, keep, k)


def test_sliced_rotation_equals_the_whole_tensor_rotation():
    g = torch.Generator().manual_seed(2)
    angles = torch.rand(8, 32, generator=g, dtype=torch.float64) * 2 * math.pi
    for dtype in (torch.float32, torch.bfloat16):
        rows = torch.randn(512, 1200, generator=g).to(dtype)  # 8 heads of 64 rows; 5 slices of columns
        cols = torch.randn(1200, 512, generator=g).to(dtype)
        for sign in (1.0, -1.0):
            assert torch.equal(reparam._rotate(rows, angles, sign, columns=False),
                               reparam._rotated(rows, angles, sign, columns=False))
            assert torch.equal(reparam._rotate(cols, angles, sign, columns=True),
                               reparam._rotated(cols, angles, sign, columns=True))


def test_a_read_converted_as_it_is_read_equals_the_cast_after_it(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    tensors = {"big": torch.randn(1500, 1001, generator=g).to(torch.bfloat16),  # several read slices, a tail
               "small": torch.randn(5, generator=g).to(torch.bfloat16), "empty": torch.empty(0, 4),
               "fp32": torch.randn(700, 1000, generator=g)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path))
    lazy = ex.LazyStateDict(path)
    for name, t in tensors.items():
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            got = lazy.read(name, dtype)
            assert got.dtype == dtype and torch.equal(got, t.to(dtype)), (name, dtype)
    assert torch.equal(lazy.rows("big", 3, 1400, torch.float32), tensors["big"][3:1400].float())
    # a chain that changes the dtype twice rounds on the way: fp32 -> bf16 -> fp32 is not the fp32 tensor
    chain = open_file(path).then(torch.bfloat16).then(torch.float32)
    assert torch.equal(chain["fp32"], tensors["fp32"].bfloat16().float())
    assert not torch.equal(chain["fp32"], tensors["fp32"])
    assert torch.equal(chain.rows("fp32", 2, 9), tensors["fp32"][2:9].bfloat16().float())
