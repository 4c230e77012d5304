"""One process of the data-parallel test (tests/test_train.py), started by torchrun:

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR
"""

import sys

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_train import DATA, fixed_noise_loss, fresh_model  # noqa: E402

from companion.train import train  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = fresh_model()
    train(fixed_noise_loss, model, DATA, n_steps=3, batch_size=16, lr=1e-2, out_dir=sys.argv[1], checkpoint_every=2)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [p.detach() for p in model.parameters()])
    if dist.get_rank() == 0:
        torch.save(gathered, f"{sys.argv[1]}/parameters.pt")
    dist.destroy_process_group()
