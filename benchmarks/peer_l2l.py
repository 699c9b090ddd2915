"""Peer step for the speed matrix: learn2learn 0.2.0's canonical MAML / Meta-SGD meta-training step on the MAML
paper's Omniglot network, on synthetic episodes, on a chosen device; prints meta-iterations per second as JSON.

The same loop as ../shared/bench/peer_maml_l2l.py (learn2learn's examples/vision/maml_omniglot.py), with a
``--device`` and ``--metasgd`` (learn2learn's ``MetaSGD``) so that the GPU check and the Meta-SGD cell use it too.
Run it with a Python that has learn2learn (``bash ../shared/bench/setup_peer.sh``).

    python benchmarks/peer_l2l.py --ways 5 --shots 1 --query 1 --meta-batch 32 --steps 1 [--first-order] [--metasgd]
"""

import argparse
import json

import learn2learn as l2l
import torch
from timing import timed

p = argparse.ArgumentParser()
p.add_argument("--ways", type=int, default=5)
p.add_argument("--shots", type=int, default=1)
p.add_argument("--query", type=int, default=None, help="query images per class (default = shots, as in l2l)")
p.add_argument("--meta-batch", type=int, default=32)
p.add_argument("--steps", type=int, default=1)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--first-order", action="store_true")
p.add_argument("--metasgd", action="store_true")
p.add_argument("--device", default="cpu")
a = p.parse_args()
q = a.query or a.shots
device = torch.device(a.device)
torch.manual_seed(0)
model = l2l.vision.models.OmniglotCNN(a.ways).to(device)
algo = (l2l.algorithms.MetaSGD(model, lr=0.4, first_order=a.first_order) if a.metasgd
        else l2l.algorithms.MAML(model, lr=0.4, first_order=a.first_order))
opt = torch.optim.Adam(algo.parameters(), 1e-3)
loss_fn = torch.nn.CrossEntropyLoss()
xs = torch.randn(a.meta_batch, a.ways * a.shots, 1, 28, 28, device=device)
ys = torch.arange(a.ways, device=device).repeat_interleave(a.shots)
xq = torch.randn(a.meta_batch, a.ways * q, 1, 28, 28, device=device)
yq = torch.arange(a.ways, device=device).repeat_interleave(q)


def meta_iter() -> None:
    opt.zero_grad()
    for t in range(a.meta_batch):
        learner = algo.clone()
        for _ in range(a.steps):
            learner.adapt(loss_fn(learner(xs[t]), ys))
        loss_fn(learner(xq[t]), yq).backward()
    for p_ in algo.parameters():
        if p_.grad is not None:  # MetaSGD's rates for an unused parameter get none
            p_.grad.mul_(1.0 / a.meta_batch)
    opt.step()


dt = timed(meta_iter, a.iters, device, warmup=a.warmup)
print(json.dumps({"impl": "learn2learn-" + l2l.__version__, "algorithm": "metasgd" if a.metasgd else "maml",
                  "first_order": a.first_order, "ways": a.ways, "shots": a.shots, "query": q, "meta_batch": a.meta_batch,
                  "steps": a.steps, "device": str(device), "meta_iters_per_s": a.iters / dt,
                  "tasks_per_s": a.iters * a.meta_batch / dt}))
