import pytest
import torch

from hle_stream.core.device import HostStager, pick_device


def test_auto_picks_cuda_only_when_a_gpu_is_visible():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_the_stager_stacks_a_batch_on_the_cpu():
    samples = [torch.full((2, 3), float(i)) for i in range(4)]
    assert torch.equal(HostStager(torch.device("cpu")).to_device(samples), torch.stack(samples))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_pinned_buffer_is_reused_without_mixing_batches():
    stager = HostStager(torch.device("cuda"))
    first = stager.to_device([torch.full((3,), 1.0), torch.full((3,), 2.0)])
    second = stager.to_device([torch.full((3,), 7.0)])  # reuses the buffer once the copy is done
    assert stager._buffer.is_pinned()
    assert first.cpu().tolist() == [[1.0] * 3, [2.0] * 3]
    assert second.cpu().tolist() == [[7.0] * 3]
