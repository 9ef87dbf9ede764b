"""``runtime.compile``: auto = on CUDA only (eager fallback), true = strict on any device; a compiled run trains like
the eager one."""
import pytest
import torch
import torch._dynamo

from tests.test_trainer import run_losses, tiny_config
from training_mode.trainer import Trainer, compile_setting
from utils.registry import ConfigError


@pytest.fixture
def restore_dynamo_config():
    saved = torch._dynamo.config.suppress_errors
    yield
    torch._dynamo.config.suppress_errors = saved


def test_auto_compiles_on_cuda_only_with_eager_fallback(restore_dynamo_config):
    torch._dynamo.config.suppress_errors = False
    assert compile_setting({}, torch.device("cpu")) is None
    assert torch._dynamo.config.suppress_errors is False
    assert compile_setting({"compile": "auto"}, torch.device("cuda", 0)) == "default"
    assert torch._dynamo.config.suppress_errors is True          # auto never fails a run on an uncompilable graph
    torch._dynamo.config.suppress_errors = False
    assert compile_setting({"compile": True, "compile_mode": "max-autotune"}, torch.device("cpu")) == "max-autotune"
    assert torch._dynamo.config.suppress_errors is False         # true is strict
    assert compile_setting({"compile": False}, torch.device("cuda", 0)) is None


@pytest.mark.parametrize("runtime, message", [({"compile": "yes"}, "runtime.compile: expected auto, true or false"),
                                              ({"compile": True, "compile_mode": "fast"}, "runtime.compile_mode")])
def test_bad_compile_settings_are_config_errors(runtime, message):
    with pytest.raises(ConfigError, match=message):
        compile_setting(runtime, torch.device("cpu"))


def test_compiled_training_follows_the_eager_run(random_faces, tmp_path):
    eager = Trainer(tiny_config(random_faces, max_steps=2), tmp_path / "eager")
    assert eager.compiled is False  # auto on the CPU: off
    eager_losses = run_losses(eager)
    compiled = Trainer(tiny_config(random_faces, max_steps=2, compile=True), tmp_path / "compiled")
    assert compiled.compiled and hasattr(compiled.train_module, "_orig_mod")
    try:
        info = compiled.fit()
    finally:
        compiled.close()
    assert info["compiled"] and info["first_step_seconds"] > 0
    # step 1's loss is the forward, step 2's follows the gradients of step 1 (a compiled graph that dropped them
    # would not train at all); later steps drift apart by kernel rounding amplified at lr 0.1
    assert [row["loss"] for row in info["history"]] == pytest.approx(eager_losses, rel=1e-3)
    assert eager.module.state_dict().keys() == compiled.module.state_dict().keys()  # checkpoints unaffected
