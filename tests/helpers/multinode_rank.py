"""One rank of tests/cluster/test_train_multinode.py: ``sertool train`` (the CLI's own entry
point) as torchrun starts it, then this rank's weights saved to OUT/rank<RANK>.pt so that the
test can check that every node ends with the same model.

Usage (under torchrun): multinode_rank.py OUT train ARGS...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from sertool.cli import main

held: list[torch.nn.Module] = []
_wrap = torch.nn.parallel.DistributedDataParallel.__init__


def _keep_module(self, module, *args, **kwargs):  # the trainer's model, as DDP wraps it
    held.append(module)
    _wrap(self, module, *args, **kwargs)


if __name__ == "__main__":
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    torch.nn.parallel.DistributedDataParallel.__init__ = _keep_module
    main(argv, standalone_mode=False)
    assert len(held) == 1, f"expected one DDP model, got {len(held)}"
    torch.save(held[0].state_dict(), out / f"rank{os.environ['RANK']}.pt")
