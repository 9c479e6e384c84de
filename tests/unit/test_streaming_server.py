"""The streaming server gives, bit for bit, the copies and θ_r of the whole-model server (tests/server_oracle.py)
on the tiny embedded model, its target stored in shards: every arm, both noise references, bf16 and fp32, and
the hashes the whole-model code recorded before the server streamed."""
import logging

import pytest

import server_oracle as so


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return so.tiny_models(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("case", sorted(so.TINY_CASES))
def test_streaming_equals_the_whole_model_server(case, tiny, tmp_path):
    settings, dtype = so.TINY_CASES[case]
    target, base = tiny
    whole = so.whole_model_round(target, base, dtype, settings, tmp_path)
    if so.RECORDING:
        so.record(case, whole)
    streamed = so.streaming_round(target, base, dtype, settings, tmp_path)
    assert streamed == whole
    assert len(set(streamed["copies"])) == len(streamed["copies"])  # the copies differ: the test can fail
    ref = so.recorded(case)
    if ref is not None:  # recorded on this CPU model and torch: today's numbers
        assert whole == ref


def _flip_last_byte(paths):
    data = bytearray(paths[-1].read_bytes())
    data[-1] ^= 1
    paths[-1].write_bytes(bytes(data))


def _delete_first(paths):
    paths[0].unlink()


@pytest.mark.parametrize("case", ["mpu_m2", "mpu_m2_bf16"])
@pytest.mark.parametrize("damage", [_flip_last_byte, _delete_first])
def test_a_published_file_changed_before_the_aggregate_is_not_trusted(case, damage, tiny, tmp_path, caplog):
    """Post-Process reads each published copy back from its file, hashed as read; a changed or missing file
    is noticed and the copies are built again, so θ_r is the same."""
    settings, dtype = so.TINY_CASES[case]
    target, base = tiny
    intact = so.streaming_round(target, base, dtype, settings, tmp_path / "intact")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    damaged = so.streaming_round(target, base, dtype, settings, tmp_path / "damaged", damage=damage)
    assert damaged == intact
    assert any("is not as it was written" in r.getMessage() for r in caplog.records)
