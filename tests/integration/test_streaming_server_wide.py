"""The streaming server against the whole-model server (tests/server_oracle.py) on a 2-block Llama at
Llama-3.2-1B's width (hidden 2048, d_ff 8192, 32 heads, 8 KV heads, tied embeddings; random init): stored in bf16
in shards like the real one (served in bf16 and in fp32) and in fp32 in one file. Copies and θ_r bit for bit,
and the hashes the whole-model code recorded before the server streamed. ~0.5 GB of weights in fp32."""
import pytest

import server_oracle as so


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("wide")


# ~2 min a case on 2 loaded cores: the bf16 sharded one (the real model's storage) runs with the suite, the others
# with the slow tests
CASES = [c if c == "wide_bf16_sharded_m2" else pytest.param(c, marks=pytest.mark.slow) for c in sorted(so.WIDE_CASES)]


@pytest.mark.parametrize("case", CASES)
def test_streaming_equals_the_whole_model_server_at_width(case, folder, tmp_path):
    settings, stored, dtype, sharded = so.WIDE_CASES[case]
    target, base = so.wide_models(folder, stored, sharded)
    if sharded:
        assert len(list(target.glob("model-*-of-*.safetensors"))) > 1
    whole = so.whole_model_round(target, base, dtype, settings, tmp_path)
    if so.RECORDING:
        so.record(case, whole)
    for f in tmp_path.glob("whole_*"):
        f.unlink()  # ~2 GB of copies: the streaming round writes its own
    streamed = so.streaming_round(target, base, dtype, settings, tmp_path)
    assert streamed == whole
    assert len(set(streamed["copies"])) == len(streamed["copies"])
    ref = so.recorded(case)
    if ref is not None:
        assert whole == ref
