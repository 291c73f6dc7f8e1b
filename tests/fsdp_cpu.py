"""`python -m in2.train.sft` with accelerate's FSDP2 path on CPU processes (gloo), for tests.

torch's `fully_shard` runs on CPU tensors over a gloo process group, but accelerate turns an FSDP
launch into FSDP only on accelerator devices (`AcceleratorState` sets `DistributedType.FSDP` for
MULTI_GPU, MULTI_XPU, ...); on CPUs the same launch becomes plain MULTI_CPU data parallel. This script
makes that one decision FSDP and leaves the rest to accelerate, transformers, TRL and in2:

    accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 1 tests/fsdp_cpu.py \
        --config recipe.yaml --use_cpu true
"""

import os
import runpy

from accelerate import state
from accelerate.utils import DistributedType

os.environ["ACCELERATE_USE_CPU"] = "true"  # gloo process group, CPU device
_init = state.AcceleratorState.__init__


def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
        # what AcceleratorState does for MULTI_GPU with an FSDP plugin
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


state.AcceleratorState.__init__ = _init_fsdp_on_cpu

if __name__ == "__main__":
    runpy.run_module("in2.train.sft", run_name="__main__", alter_sys=True)
