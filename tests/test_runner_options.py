"""check_runner_options: every runner option that cannot work is one DDSMError line, before anything is written."""

from __future__ import annotations

import math

import pytest
import torch

from ddsm.errors import DDSMError
from ddsm.search.runners import check_runner_options, parse_address

GOOD = dict(workers=2, chunk_size=4, address=None, gpus_per_worker=None, device="auto")


def refused(kind: str, **changes) -> str:
    with pytest.raises(DDSMError) as e:
        check_runner_options(kind, **{**GOOD, **changes})
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("kind, changes", [
    ("serial", {}),
    ("ray", {}),
    ("serial", {"device": "cpu", "workers": 1, "chunk_size": 1}),
    ("ray", {"address": "127.0.0.1:6379", "gpus_per_worker": 0.5}),
    ("ray", {"address": "auto", "gpus_per_worker": 0}),
    ("ray", {"address": "ray://head.example:10001", "gpus_per_worker": 2}),
    ("ray", {"address": "[::1]:6379"}),
    ("ray", {"address": "10.0.0.5:6379", "device": "cuda"}),  # the cluster's machines run the evaluators
])
def test_options_that_can_work_pass(kind, changes):
    check_runner_options(kind, **{**GOOD, **changes})


def test_an_unknown_runner_is_refused():
    assert refused("dask") == "runner 'dask' is not one of serial, ray"


@pytest.mark.parametrize("workers", [0, -1, 1.5])
def test_workers_below_one_are_refused(workers):
    assert f"workers {workers!r}" in refused("ray", workers=workers)


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_a_chunk_size_below_one_is_refused(chunk_size):
    assert f"chunk_size {chunk_size}" in refused("serial", chunk_size=chunk_size)


@pytest.mark.parametrize("gpus", [-1.0, math.nan, math.inf, 1.5])
def test_bad_gpus_per_worker_are_refused(gpus):
    assert f"gpus_per_worker {gpus!r}" in refused("ray", gpus_per_worker=gpus)


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", ":6379", "127.0.0.1:port", "127.0.0.1:70000",
                                     "host:63 79"])
def test_an_address_that_is_not_host_port_is_refused(address):
    assert refused("ray", address=address) == f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'"


def test_an_address_with_the_serial_runner_is_refused():
    msg = refused("serial", address="127.0.0.1:6379")
    assert "--address '127.0.0.1:6379'" in msg and "--runner ray" in msg


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu"])
def test_a_device_that_is_not_a_torch_device_is_refused(device):
    assert f"device {device!r}" in refused("serial", device=device)
    assert f"device {device!r}" in refused("ray", device=device, address="127.0.0.1:6379")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("kind", ["serial", "ray"])
def test_cuda_without_cuda_is_refused(kind):
    assert refused(kind, device="cuda") == ("device 'cuda' was asked for but CUDA is not available here; "
                                            "use --device cpu or auto")


def test_parse_address():
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_address("ray://[::1]:10001") == ("::1", 10001)
