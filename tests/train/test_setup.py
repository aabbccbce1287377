"""Precision and runtime checks resolved before any process group."""

from __future__ import annotations

import pytest

from distgan.config import load_config
from distgan.errors import ConfigError
from distgan.train.setup import check_runtime, has_gpu, resolve_mixed_precision


def test_mixed_precision_comes_from_config_else_accelerate(monkeypatch) -> None:
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert resolve_mixed_precision(load_config("demo_digits")) == "bf16"
    assert resolve_mixed_precision(load_config("demo_digits", ["train.mixed_precision=fp16"])) == "fp16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert resolve_mixed_precision(load_config("demo_digits")) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="train.mixed_precision: must be one of no, fp16, bf16; got 'fp8'"):
        resolve_mixed_precision(load_config("demo_digits"))


@pytest.mark.skipif(has_gpu(), reason="checks the CPU-only refusal of SyncBatchNorm")
def test_sync_bn_on_cpu_with_several_processes_is_refused(monkeypatch) -> None:
    cfg = load_config("demo_digits", ["train.sync_bn=true"])
    check_runtime(cfg)  # one process: SyncBatchNorm is not used, nothing to refuse
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="train.sync_bn: SyncBatchNorm needs CUDA GPUs"):
        check_runtime(cfg)


def test_stop_signals_record_the_first_and_restore_the_previous_handlers() -> None:
    import os
    import signal

    from distgan.train.signals import StopSignals

    before = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
    signals = StopSignals()
    os.kill(os.getpid(), signal.SIGTERM)  # handled: only noted, the process goes on
    os.kill(os.getpid(), signal.SIGUSR1)
    assert signals.received == "SIGTERM"  # the first one; job scripts repeat their request as SIGUSR1
    signals.restore()
    assert {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS} == before
