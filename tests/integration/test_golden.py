"""θ after a 2-round tiny run is bit-identical to the digest recorded before the kinds /
data-registry refactor (commit 039d7fc): the refactor moved code, not numbers. A change
that is meant to alter θ updates the digest here and says why in its commit."""

import hashlib

import pytest
import torch

from metaray.checkpoint import load_checkpoint
from metaray.config import load_config
from metaray.distributed import train

pytestmark = pytest.mark.integration

TINY_IMAGE = [
    "kind=image", "model.backbone=efficientnet-lite0", "model.image_size=40", "prompt.init=random",
    "prompt.length=2", "prompt.region=image", "data.meta_train=[omniglot/train]", "data.meta_val=omniglot/val",
    "data.k_shot=1", "meta.inner.views=1", "eval.methods=[protonet]", "meta.inner.batch_ways=3",
]  # fmt: skip
RUNS = {
    "classify-reptile": ("configs/tiny.yaml", []),
    "classify-fomaml": ("configs/tiny.yaml", ["meta.algorithm=fomaml", "data.same_domain=true"]),
    "classify-multitask": ("configs/tiny.yaml", ["meta.algorithm=multitask"]),
    "image-reptile": ("configs/tiny.yaml", TINY_IMAGE),
    "qa-reptile": ("configs/tiny-qa.yaml", ["model.backbone={tiny_lm}"]),
}
# Float kernels differ by CPU (torch dispatches on the CPU's vector width, and its math
# libraries on the vendor too), so θ's bits do as well: the digests accepted per capability,
# each set recorded with the pre-refactor code (039d7fc) on such a CPU and given by today's
# code there. AVX512: an earlier session's machine (2026-11-30; AVX-512 by elimination, its
# digests differ from AVX2's, and an AMD EPYC with AVX512-BF16 gave them through 2026-12-02);
# an Intel Xeon with AVX512-BF16 (2026-12-02), where 039d7fc and the code of that day gave the
# second set. AVX2 (AMD EPYC without AVX-512): 2026-12-01.
GOLDEN = {
    "AVX512": [
        {
            "classify-fomaml": "2dd621af5ce88350ec6ac902aa324cb6b4d6858db1219ad581cc1c4445662f85",
            "classify-multitask": "502902a273aecbd92876c815b92a067f9d2c7d3cba2fa6692a5ad27382087bad",
            "classify-reptile": "501976d4efd78208a8ca2b5e18577684e9c67436af2e5ae14adec6dfb037f56d",
            "image-reptile": "86641e20b33e4b1d14ead6042ec6fd63537f27a1eb90e03d519bd2b2941e293a",
            "qa-reptile": "c045ef45314aa28f8c1a1c86dea83e9a681990dd2a52eef46cf6a02db5ca37d7",
        },
        {
            "classify-fomaml": "0c116e9d27300963d1b218c597c79a01c73207601e87e5aea6b140782221236a",
            "classify-multitask": "bfc35ab1226296bbd979a25986ec80b06d133c51ea98c1900bf6f0df6e91969d",
            "classify-reptile": "d071cc1e976a2a395d58172037cfe2af814b3781a78d5948ba91e70a28ed2220",
            "image-reptile": "8d3c608224a2836bb64a108e9b7a903b6dc152109a607a64e5f3fbdbae924ae0",
            "qa-reptile": "5576465e4b2806cc1dc5e3dc6916f6f3c2cecf0e42dab4a3f1130c7a74cb353c",
        },
    ],
    "AVX2": [
        {
            "classify-fomaml": "cf2148e59647e80154b32d1b2489be885ebbe0d67516ce4e04d0c32ab275f1ed",
            "classify-multitask": "0f2f5fba50a7dc5775618e538aa5100b9702d41a808e8d6a0f5d7d02ffd383f2",
            "classify-reptile": "1cbda440324224e3fe11dcad2c138142a1b1475646254431620a7002fb397cb8",
            "image-reptile": "86641e20b33e4b1d14ead6042ec6fd63537f27a1eb90e03d519bd2b2941e293a",
            "qa-reptile": "f905f960019e7e93b9eff7ed05d99ea83a0abd0eec5e6050687ec5b28f4cc445",
        },
    ],
}


def theta_digest(config: str, overrides: list[str], data_dir: str, out: str) -> str:
    cfg = load_config(config, [f"data.data_dir={data_dir}", f"output.dir={out}", "ray.local=true", *overrides])
    train(cfg, progress=False)
    state, _ = load_checkpoint(out)
    return hashlib.sha256(state["meta_prompt"].contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("run", sorted(RUNS))
def test_theta_is_bit_identical_to_the_recorded_digest(run, data_dir, tiny_lm_dir, tmp_path):
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in GOLDEN:
        pytest.skip(f"θ digests are recorded for {sorted(GOLDEN)} CPUs; this one is {capability}: record them here")
    config, overrides = RUNS[run]
    overrides = [o.format(tiny_lm=tiny_lm_dir) for o in overrides]
    assert theta_digest(config, overrides, data_dir, str(tmp_path)) in {digests[run] for digests in GOLDEN[capability]}
