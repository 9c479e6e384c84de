"""streaming_pass: one intra-op thread inside a server pass, a heap that keeps freed blocks, both put back after."""

import resource

import pytest
import torch

from mpu_cli.mpu import streaming
from mpu_cli.mpu.streaming import in_streaming_pass, streaming_pass, worker_threads

BIG = 1 << 24  # 64 MiB of fp32: above every mmap threshold glibc would slide to


@pytest.fixture(autouse=True)
def _threads_as_they_were():
    """The tests set torch's thread count; the next test in this worker gets the count it had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _faults_touching_new_tensor() -> int:
    """Minor page faults of allocating and filling one BIG tensor after another was freed."""
    first = torch.ones(BIG)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.ones(BIG)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


def test_one_intra_op_thread_inside_and_the_count_restored_after():
    torch.set_num_threads(2)
    with streaming_pass():
        assert torch.get_num_threads() == 1
        assert worker_threads() == 2  # independent noise streams still run side by side
        with streaming_pass():  # nested: still one thread, restored once, by the outer pass
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    assert worker_threads() == 2


def test_settings_restored_when_the_pass_raises():
    torch.set_num_threads(2)

    @in_streaming_pass
    def failing():
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing()
    assert torch.get_num_threads() == 2
    assert streaming._depth == 0


@pytest.mark.skipif(streaming._LIBC is None, reason="glibc's mallopt is not available here")
def test_freed_blocks_are_reused_inside_a_pass_and_mapped_alone_again_after():
    with streaming_pass():
        _faults_touching_new_tensor()  # the heap grows once
        inside = _faults_touching_new_tensor()
    outside = _faults_touching_new_tensor()
    assert inside < 8  # the freed block is the next tensor's: no fresh page to clear
    assert outside >= 16  # a block of its own again: fresh pages (2 MiB huge pages or 4 KiB ones)
