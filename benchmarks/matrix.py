"""The speed matrix: nas-meta against its peers at every Omniglot setting, side by side, in one run.

Cells (paper settings): MAML second and first order at 5w1s and 5w5s (1 inner step, meta-batch 32) and 20w1s and
20w5s (5 steps, meta-batch 16) against learn2learn 0.2.0 (``benchmarks/peer_l2l.py``); Meta-SGD at 5w1s against
learn2learn's ``MetaSGD``; Reptile (paper settings, ``studies/baselines/reptile-5w1s.yaml``) against a per-task
loop written the way openai/supervised-reptile does it (``benchmarks/reptile_reference.py``). Each cell runs peer
and nas-meta alternately, ``--rounds`` times, each in a fresh process; the table gives medians, the ratio's range
over rounds, the FLOPs of one nas-meta meta-iteration (``torch.utils.flop_counter``), the achieved GFLOP/s and its
share of this device's measured GEMM peak.

    python benchmarks/matrix.py [--peer /tmp/nas-meta-peer/bin/python] [--rounds 3] [--iters 5] [--device cpu]
                                [--cells 5w1s-so,5w1s-fo,...] [--out benchmarks/results/matrix] [--dry-run]

``--dry-run`` (CI): tiny meta-batches and one iteration per cell, peers skipped when learn2learn is missing, so the
script cannot rot. Run the real thing alone on the machine: any other process changes the timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Cell:
    name: str
    strategy: str  # nas-meta's
    ways: int
    shots: int
    query: int
    steps: int
    meta_batch: int
    peer: str  # "l2l-maml", "l2l-metasgd" or "reptile-loop"


CELLS = [
    Cell("5w1s-so", "maml", 5, 1, 1, 1, 32, "l2l-maml"), Cell("5w1s-fo", "fomaml", 5, 1, 1, 1, 32, "l2l-maml"),
    Cell("5w5s-so", "maml", 5, 5, 5, 1, 32, "l2l-maml"), Cell("5w5s-fo", "fomaml", 5, 5, 5, 1, 32, "l2l-maml"),
    Cell("20w1s-so", "maml", 20, 1, 3, 5, 16, "l2l-maml"), Cell("20w1s-fo", "fomaml", 20, 1, 3, 5, 16, "l2l-maml"),
    Cell("20w5s-so", "maml", 20, 5, 5, 5, 16, "l2l-maml"), Cell("20w5s-fo", "fomaml", 20, 5, 5, 5, 16, "l2l-maml"),
    Cell("metasgd-5w1s", "metasgd", 5, 1, 1, 1, 32, "l2l-metasgd"),
    Cell("reptile-5w1s", "reptile", 5, 1, 9, 5, 5, "reptile-loop"),
]


class RunFailed(Exception):
    """One timing process failed: the cell reports it and the matrix goes on."""


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{Path(cmd[1]).name} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RunFailed(f"{Path(cmd[1]).name} exited {done.returncode}: {last}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ours_once(cell: Cell, iters: int, device: str) -> dict[str, Any]:
    """One nas-meta timing of ``cell`` in this process (called in a fresh process by :func:`ours`)."""
    import torch

    from nas_meta.bench import bench

    result = bench(strategy=cell.strategy, ways=cell.ways, shots=cell.shots, query=cell.query,
                   meta_batch=cell.meta_batch, steps=cell.steps, iterations=iters, warmup=1, device=device,
                   config=cell_config(cell))
    result["gflop_per_meta_iter"] = cell_gflop(cell, device)
    result["gemm_peak_gflops"] = gemm_peak(torch.device(result["device"]))
    return result


def cell_config(cell: Cell) -> Any:
    from nas_meta.config import load_train_config

    return load_train_config(ROOT / "studies" / "baselines" / "reptile-5w1s.yaml") if cell.strategy == "reptile" else None


def cell_gflop(cell: Cell, device: str) -> float:
    """The FLOPs of one nas-meta meta-iteration of ``cell``, in billions (the same on every device)."""
    from torch.utils.flop_counter import FlopCounterMode

    from nas_meta.bench import synthetic_episode
    from nas_meta.runtime import resolve_device
    from nas_meta.training import build_learner

    config = bench_config(cell, cell_config(cell))
    learner = build_learner(config, 100, resolve_device(device), seed=0)
    episode = synthetic_episode(config, cell.meta_batch, resolve_device(device))
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        learner.meta_step(episode, 0.0)
    return float(counter.get_total_flops()) / 1e9


def conv_backward_flops(grad_out_shape: Any, x_shape: Any, w_shape: Any, _bias: Any, _stride: Any, _padding: Any,
                        _dilation: Any, transposed: bool, _output_padding: Any, _groups: Any, output_mask: Any,
                        out_shape: Any = None, **kwargs: Any) -> int:
    """A convolution's backward costs one forward per gradient computed (input, weight), grouped or not.

    torch's own formula (2.13) ignores ``groups`` for the weight gradient and counts a grouped convolution of G
    groups about G/2 times too many FLOPs; the task-batched engine's per-task convolutions are grouped.
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_formulas() -> dict[Any, Any]:
    import torch

    return {torch.ops.aten.convolution_backward: conv_backward_flops}


def bench_config(cell: Cell, config: Any) -> Any:
    import dataclasses

    from nas_meta.config import TrainConfig

    base = config or TrainConfig()
    return dataclasses.replace(
        base, task=dataclasses.replace(base.task, ways=cell.ways, shots=cell.shots, query=cell.query),
        learner=dataclasses.replace(base.learner, strategy=cell.strategy, meta_batch=cell.meta_batch,
                                    train_steps=cell.steps))


def gemm_peak(device: Any, n: int = 2048) -> float:
    """This device's float32 matrix-product rate in GFLOP/s (the best of a few products)."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def ours(cell: Cell, iters: int, device: str, inline: bool) -> dict[str, Any]:
    if inline:  # on a GPU a fresh process per cell costs more start-up than the timing itself
        return ours_once(cell, iters, device)
    return run_json([sys.executable, str(Path(__file__).resolve()), "--one", cell.name, "--iters", str(iters),
                     "--device", device], timeout=1800)


def peer(cell: Cell, python: str, iters: int, device: str) -> dict[str, Any]:
    settings = ["--ways", str(cell.ways), "--shots", str(cell.shots), "--query", str(cell.query), "--meta-batch",
                str(cell.meta_batch), "--steps", str(cell.steps), "--iters", str(iters), "--device", device]
    if cell.peer == "reptile-loop":
        return run_json([sys.executable, str(ROOT / "benchmarks" / "reptile_reference.py"), *settings], timeout=1800)
    extra = (["--first-order"] if cell.strategy == "fomaml" else []) + (["--metasgd"] if cell.peer == "l2l-metasgd" else [])
    return run_json([python, str(ROOT / "benchmarks" / "peer_l2l.py"), *settings, *extra], timeout=1800)


def has_l2l(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import learn2learn"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| cell | peer | peer (meta-it/s) | nas-meta (meta-it/s) | ratio (median) | ratio range | GFLOP / meta-it "
             "| nas-meta GFLOP/s | share of GEMM peak |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peer_rate = ("failed" if r.get("peer_failure") else "-") if r["peer_median"] is None else f"{r['peer_median']:.3f}"
        ratio = "-" if r["ratio_median"] is None else f"**{r['ratio_median']:.2f}x**"
        spread = "-" if r["ratio_min"] is None else f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}x"
        lines.append(f"| {r['cell']} | {r['peer']} | {peer_rate} | {r['ours_median']:.3f} | {ratio} | {spread} | "
                     f"{r['gflop']:.2f} | {r['gflops']:.1f} | {100 * r['gflops'] / r['peak']:.0f}% of {r['peak']:.0f} |")
    return "\n".join(lines)


def figure_html(rows: list[dict[str, Any]]) -> str:
    import plotly.graph_objects as go

    measured = [r for r in rows if r["ratio_median"] is not None]
    fig = go.Figure(go.Bar(x=[r["cell"] for r in measured], y=[r["ratio_median"] for r in measured],
                           error_y={"type": "data", "symmetric": False,
                                    "array": [r["ratio_max"] - r["ratio_median"] for r in measured],
                                    "arrayminus": [r["ratio_median"] - r["ratio_min"] for r in measured]}))
    fig.add_hline(y=2.0, line_dash="dash", annotation_text="2x floor")
    fig.update_layout(title="nas-meta meta-iterations/s over its peer's (median, range over rounds)",
                      yaxis_title="speed ratio", xaxis_title="cell")
    return str(fig.to_html(include_plotlyjs="cdn"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default="/tmp/nas-meta-peer/bin/python", help="a Python with learn2learn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", default=",".join(c.name for c in CELLS))
    parser.add_argument("--out", help="folder for matrix.json, matrix.md and matrix.html")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, one iteration: checks the script runs")
    parser.add_argument("--flops", action="store_true", help="print each cell's GFLOP per meta-iteration and stop")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    by_name = {c.name: c for c in CELLS}
    if args.one:
        print(json.dumps(ours_once(by_name[args.one], args.iters, args.device)))
        return
    cells = [by_name[name] for name in args.cells.split(",")]
    if args.flops:
        for cell in cells:
            print(json.dumps({"cell": cell.name, "gflop_per_meta_iter": cell_gflop(cell, "cpu")}), flush=True)
        return
    if args.dry_run:
        import dataclasses

        cells = [dataclasses.replace(c, meta_batch=2, steps=min(c.steps, 2)) for c in cells]
        by_name.update({c.name: c for c in cells})
        args.rounds, args.iters = 1, 1
    peers_available = has_l2l(args.peer)
    inline = args.dry_run or args.device.startswith("cuda")
    rows: list[dict[str, Any]] = []
    for cell in cells:
        runs = []
        for _ in range(args.rounds):
            theirs, failure = None, None
            if peers_available or cell.peer == "reptile-loop":
                try:
                    theirs = peer(cell, args.peer, args.iters, args.device)
                except RunFailed as error:
                    failure = str(error)
                    print(f"{cell.name}: peer failed: {failure}", flush=True)
            runs.append({"peer": theirs, "peer_failure": failure, "nas_meta": ours(cell, args.iters, args.device, inline)})
        ours_rates = [r["nas_meta"]["meta_iters_per_s"] for r in runs]
        peer_rates = [r["peer"]["meta_iters_per_s"] for r in runs if r["peer"] is not None]
        ratios = [o / p for o, p in zip(ours_rates, peer_rates)]
        last = runs[-1]["nas_meta"]
        rows.append({"cell": cell.name, "peer": cell.peer, "runs": runs,
                     "peer_failure": next((r["peer_failure"] for r in runs if r["peer_failure"]), None), "ours_median": statistics.median(ours_rates),
                     "peer_median": statistics.median(peer_rates) if peer_rates else None,
                     "ratio_median": statistics.median(ratios) if ratios else None,
                     "ratio_min": min(ratios) if ratios else None, "ratio_max": max(ratios) if ratios else None,
                     "gflop": last["gflop_per_meta_iter"], "peak": last["gemm_peak_gflops"],
                     "gflops": last["gflop_per_meta_iter"] * statistics.median(ours_rates)})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        if args.out:  # after every cell, so a run stopped at its time limit keeps what it measured
            write(Path(args.out), args, rows)
    print(table(rows))


def write(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps({"device": args.device, "rounds": args.rounds, "iters": args.iters,
                                                  "rows": rows}, indent=2))
    (out / "matrix.md").write_text(table(rows) + "\n")
    (out / "matrix.html").write_text(figure_html(rows))


if __name__ == "__main__":
    main()
