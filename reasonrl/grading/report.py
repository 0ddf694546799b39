"""Metrics, tables and plots for eval.py (split out so eval.py stays one job: generate and grade).

Everything here is a pure function of graded sample records, so `python eval.py --regrade` and
`python eval.py --plot_runs` can rebuild every number and figure from the output files alone.

Metrics, per benchmark (P problems, problem i has n_i samples of which c_i are correct):
  avg@k      mean over problems of c_i / n_i (JustRL's headline number, k = samples per problem)
  avg@k SE   standard error across problems of the per-problem means: std(c_i / n_i, ddof=1) / sqrt(P).
             It measures problem-sampling noise plus sample noise; 0.0 when P = 1.
  pass@k     mean over problems of the unbiased estimator 1 - C(n_i - c_i, k) / C(n_i, k)
             (Chen et al. 2021), for k = 1, 2, 4, ... up to min(n_i), plus min(n_i) itself.
"""

import json
import math
import re
from pathlib import Path

# Numbers reported in the JustRL paper (recipes.md section 1), avg@k in percent.
BENCHMARK_ORDER = ["AIME24", "AIME25", "AMC23", "MATH-500", "Minerva", "Olympiad-Bench", "HMMT25", "BRUMO25", "CMIMC25"]
REPORTED = {
    "deepseek-r1-distill-1.5b": [29.90, 22.40, 63.82, 84.90, 34.65, 45.95, 13.44, 30.94, 12.89, 37.65],
    "justrl-deepseek": [52.60, 38.75, 91.02, 91.65, 51.47, 67.99, 21.98, 52.71, 25.63, 54.87],
    "openmath-nemotron-1.5b": [58.75, 48.44, 90.55, 92.40, 26.93, 71.70, 30.10, 61.67, 30.08, 56.74],
    "justrl-nemotron": [69.69, 62.92, 96.02, 94.15, 30.24, 76.59, 40.63, 66.88, 41.72, 64.32],
}
REPORTED = {model: dict(zip(BENCHMARK_ORDER + ["avg"], row)) for model, row in REPORTED.items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples, c of them correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def avg_at_k(counts: list[tuple[int, int]]) -> float:
    """Mean over problems of the fraction correct; counts = [(n_i, c_i), ...]."""
    return sum(c / n for n, c in counts) / len(counts)


def standard_error(counts: list[tuple[int, int]]) -> float:
    """Standard error across problems of the per-problem fractions correct (0.0 for one problem)."""
    means = [c / n for n, c in counts]
    if len(means) < 2:
        return 0.0
    mu = sum(means) / len(means)
    var = sum((m - mu) ** 2 for m in means) / (len(means) - 1)
    return math.sqrt(var / len(means))


def pass_at_k_curve(counts: list[tuple[int, int]]) -> dict[int, float]:
    """pass@k averaged over problems for k = 1, 2, 4, ... <= min n_i, and min n_i itself."""
    n_min = min(n for n, _ in counts)
    ks = sorted({2**j for j in range(n_min.bit_length()) if 2**j <= n_min} | {n_min})
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks}


def benchmark_metrics(records: list[dict]) -> dict:
    """All per-benchmark numbers from graded records ({example_id, correct, extracted, n_tokens, ...})."""
    per_problem: dict[str, list[dict]] = {}
    for r in records:
        per_problem.setdefault(r["example_id"], []).append(r)
    counts = [(len(rs), sum(bool(r["correct"]) for r in rs)) for rs in per_problem.values()]
    curve = pass_at_k_curve(counts)
    return {
        "n_problems": len(counts),
        "n_samples": min(n for n, _ in counts),
        "n_responses": len(records),
        "avg_at_k": avg_at_k(counts),
        "avg_at_k_se": standard_error(counts),
        "pass_at_k": {str(k): v for k, v in curve.items()},
        "solved_by_none": sum(c == 0 for _, c in counts),
        "solved_by_all": sum(c == n for n, c in counts),
        "no_box": sum(r.get("extracted") is None for r in records),
        "truncated": sum(r.get("finish_reason") == "length" for r in records),
        "rule_correct": sum(bool(r.get("rule_correct")) for r in records),
        "verifier_rescued": sum(bool(r.get("verifier_correct")) and not r.get("rule_correct") for r in records),
        "mean_tokens": sum(r["n_tokens"] for r in records) / len(records),
    }


def summarize(per_benchmark: dict[str, dict], model: str) -> dict:
    """results.json content: per-benchmark metrics and their unweighted mean over benchmarks."""
    names = list(per_benchmark)
    average = {
        "avg_at_k": sum(m["avg_at_k"] for m in per_benchmark.values()) / len(names) if names else None,
        "n_benchmarks": len(names),
        "all_nine": set(BENCHMARK_ORDER) <= set(names),
    }
    return {"model": model, "benchmarks": per_benchmark, "average": average}


def results_table(results: dict, compare: str | None = None) -> str:
    """Markdown table of results (percent), with the paper's numbers beside when `compare` names a REPORTED row."""
    if compare is not None and compare not in REPORTED:
        raise ValueError(f"--compare {compare!r} is not one of {sorted(REPORTED)}")
    reported = REPORTED.get(compare, {})
    head = "| benchmark | problems | k | avg@k (%) | SE | pass@k (%) | none solved | all solved | no box | mean tokens |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    if compare:
        head, rule = head + f" {compare} (%) | diff |", rule + " ---: | ---: |"
    lines = [f"# {results['model']}", "", head, rule]
    for name, m in results["benchmarks"].items():
        k = m["n_samples"]
        row = (f"| {name} | {m['n_problems']} | {k} | {100 * m['avg_at_k']:.2f} | {100 * m['avg_at_k_se']:.2f} | "
               f"{100 * m['pass_at_k'][str(k)]:.2f} | {m['solved_by_none']} | {m['solved_by_all']} | "
               f"{m['no_box']} | {m['mean_tokens']:.0f} |")
        if compare:
            row += _reported_cells(reported.get(name), 100 * m["avg_at_k"])
        lines.append(row)
    avg = results["average"]
    if avg["avg_at_k"] is not None:
        label = "average (9 benchmarks)" if avg["all_nine"] else f"average ({avg['n_benchmarks']} benchmarks)"
        row = f"| {label} |  |  | {100 * avg['avg_at_k']:.2f} |  |  |  |  |  |  |"
        if compare:
            row += _reported_cells(reported["avg"] if avg["all_nine"] else None, 100 * avg["avg_at_k"])
        lines.append(row)
    return "\n".join(lines) + "\n"


def _reported_cells(reported: float | None, ours: float) -> str:
    return " - | - |" if reported is None else f" {reported:.2f} | {ours - reported:+.2f} |"


def write_results(output_dir: Path, results: dict, compare: str | None = None) -> None:
    """results.json, results.md and the two per-run plots."""
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "results.md").write_text(results_table(results, compare))
    if results["benchmarks"]:
        plot_accuracy(results, output_dir / "accuracy.png", compare)
        plot_pass_at_k(results, output_dir / "pass_at_k.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(results: dict, path: Path, compare: str | None = None) -> None:
    """Bar per benchmark: avg@k with +-1 SE error bars; the paper's number as a marker when comparing."""
    plt = _pyplot()
    names = list(results["benchmarks"])
    ms = [results["benchmarks"][n] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 4))
    ax.bar(names, [100 * m["avg_at_k"] for m in ms], yerr=[100 * m["avg_at_k_se"] for m in ms], capsize=4,
           label=results["model"])
    if compare:
        points = [(i, REPORTED[compare][n]) for i, n in enumerate(names) if n in REPORTED[compare]]
        ax.scatter([i for i, _ in points], [v for _, v in points], color="black", marker="_", s=400, zorder=3,
                   label=f"{compare} (reported)")
    ax.set_ylabel("avg@k (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pass_at_k(results: dict, path: Path) -> None:
    """pass@k against k (log2 axis), one line per benchmark."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in results["benchmarks"].items():
        ks = [int(k) for k in m["pass_at_k"]]
        ax.plot(ks, [100 * v for v in m["pass_at_k"].values()], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def step_of(run_dir: str) -> int:
    """Training step from a checkpoint directory name such as '.../checkpoint-150'."""
    match = re.search(r"checkpoint-(\d+)", Path(run_dir).name)
    if match is None:
        raise ValueError(f"cannot read a step from {run_dir!r}: name it checkpoint-N or pass --steps")
    return int(match.group(1))


def run_steps(run_dirs: list[str], steps: list[int] | None = None) -> list[int]:
    """The training step of each run: `steps` as given, else read from the directory names."""
    steps = steps or [step_of(d) for d in run_dirs]
    if len(steps) != len(run_dirs):
        raise ValueError(f"--steps has {len(steps)} values for {len(run_dirs)} run directories")
    return steps


def plot_runs(run_dirs: list[str], path: Path, steps: list[int] | None = None, xlabel: str = "training step") -> dict:
    """avg@k of each benchmark (and their mean) against training step, from the runs' results.json."""
    steps = run_steps(run_dirs, steps)
    series: dict[str, list[tuple[int, float]]] = {}
    for step, run_dir in sorted(zip(steps, run_dirs)):
        results_path = Path(run_dir) / "results.json"
        if not results_path.exists():
            raise FileNotFoundError(f"{results_path} is missing: run eval.py on that checkpoint first")
        results = json.loads(results_path.read_text())
        for name, m in results["benchmarks"].items():
            series.setdefault(name, []).append((step, 100 * m["avg_at_k"]))
        if results["average"]["avg_at_k"] is not None and len(results["benchmarks"]) > 1:  # one benchmark: itself
            series.setdefault("average", []).append((step, 100 * results["average"]["avg_at_k"]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in series.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=name,
                linewidth=2.5 if name == "average" else 1.2)
    ax.set_xlabel(xlabel)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_ylabel("avg@k (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return series
