"""Time the parts of nas-meta's MAML step (default network, 5-way 1-shot, 1 query per class, meta-batch 32).

    python benchmarks/step_parts.py [full_fo full_so adapt query qfwd sup sup0]
Environment switches for the ablations quoted in the README: NOBIAS=1 (convolutions without bias),
FTZ=1 (flush denormals), NOMKLDNN=1 (oneDNN off).
"""
import time, sys, torch, dataclasses
from functools import partial
from nas_meta.config import TrainConfig
from nas_meta.api import build_learner
from nas_meta.runtime import tune_allocator
from nas_meta import functional as Fn
tune_allocator()
T = 32
cfg = TrainConfig()
cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, ways=5, shots=1, query=1),
     learner=dataclasses.replace(cfg.learner, strategy="fomaml", meta_batch=T, train_steps=1))
L = build_learner(cfg, label_space=100, device=torch.device("cpu"), seed=0)
g = torch.Generator().manual_seed(0)
sx = torch.rand(T, 5, 1, 28, 28, generator=g); sy = torch.arange(5).expand(T, -1).contiguous()
qx = torch.rand(T, 5, 1, 28, 28, generator=g); qy = sy.clone()
net = L.network
import os
if os.environ.get("NOBIAS"):
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_parameter("bias", None)
if os.environ.get("FTZ"):
    torch.set_flush_denormal(True)
if os.environ.get("NOMKLDNN"):
    torch.backends.mkldnn.enabled = False
params = dict(net.named_parameters())
def timeit(name, fn, n=30):
    for _ in range(3): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    dt = (time.perf_counter() - t) / n
    print(f"{name:40s} {dt*1000:7.1f} ms")
    return dt
fo = partial(Fn.sgd_adapt, steps=1, lr=0.4, first_order=True)
so = partial(Fn.sgd_adapt, steps=1, lr=0.4, first_order=False)
def full(adapt):
    def f():
        for p in params.values(): p.grad = None
        l, a = Fn.batched_query_loss(net, params, {}, sx, sy, qx, qy, adapt=adapt)
        l.mean().backward()
    return f
def adapt_only():
    with torch.no_grad():
        return Fn.batched_adapt(net, params, {}, sx, sy, adapt=fo)
adapted = {k: v.detach().requires_grad_() for k, v in adapt_only().items()}
def query_only():
    out = Fn.batched_forward(net, adapted, {}, qx)
    torch.nn.functional.cross_entropy(out.reshape(-1, 5), qy.reshape(-1)).backward()
def query_fwd():
    with torch.no_grad():
        Fn.batched_forward(net, adapted, {}, qx)
def support_fwd():
    with torch.no_grad():
        Fn.batched_forward(net, {k: v.expand(T, *v.shape) for k, v in params.items()}, {}, sx)
which = sys.argv[1:] or ["full_fo", "full_so", "adapt", "query", "qfwd"]
for w in which:
    if w == "full_fo": timeit("first-order step (no optimizer)", full(fo))
    if w == "full_so": timeit("second-order step (no optimizer)", full(so), n=15)
    if w == "adapt": timeit("support fwd+grad (vmap, no_grad)", adapt_only)
    if w == "query": timeit("query fwd+bwd per-task weights", query_only)
    if w == "qfwd": timeit("query fwd only per-task weights", query_fwd)
from torch.func import grad, vmap
def sup_fwd_vmap():
    with torch.no_grad():
        vmap(lambda x, y: Fn.classification_loss(params, net, {}, x, y), in_dims=(1, 0))(Fn.example_major(sx), sy)
def sup_grad_vmap():
    with torch.no_grad():
        vmap(lambda x, y: grad(Fn.classification_loss)(params, net, {}, x, y), in_dims=(1, 0))(Fn.example_major(sx), sy)
if "sup" in which:
    timeit("support fwd (vmap)", sup_fwd_vmap)
    timeit("support grad (vmap)", sup_grad_vmap)
    print(torch.get_num_threads())
def sup_fwd_vmap0():
    with torch.no_grad():
        vmap(lambda x, y: Fn.classification_loss(params, net, {}, x, y), in_dims=(0, 0))(sx, sy)
def sup_grad_vmap0():
    with torch.no_grad():
        vmap(lambda x, y: grad(Fn.classification_loss)(params, net, {}, x, y), in_dims=(0, 0))(sx, sy)
if "sup0" in which:
    timeit("support fwd (vmap, task-major)", sup_fwd_vmap0)
    timeit("support grad (vmap, task-major)", sup_grad_vmap0)
    timeit("support fwd (vmap)", sup_fwd_vmap)
    timeit("support grad (vmap)", sup_grad_vmap)
