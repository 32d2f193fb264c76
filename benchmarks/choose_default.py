"""Choose int8kit's default recipe by leaving one zoo model out, and check it against the peers.

    .venv/bin/python benchmarks/choose_default.py [--backend trt-like]

Reads benchmarks/results/zoo/<model>.recipes.json and .peers.json (zoo_bench.py). For every model k, the recipe with the
best rank-based score on the OTHER models is chosen (per model, recipes are ranked by the model's
task metric, ties broken by its second metric; the score is the mean normalised rank, so one model
with a wide dB spread cannot outvote the others), then scored on k against the best
TensorRT-deployable peer and the best peer of any kind. Two protocols:

- ``global``: one recipe for every model;
- ``by-family``: conv nets and transformers get their own recipe (``auto`` looks at the graph),
  each chosen on the other models of its family.

The recipe chosen on ALL models (per protocol) is the default; writes
benchmarks/results/zoo_loo.json and zoo_loo.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, save_json  # noqa: E402

ZOO_RESULTS = RESULTS / "zoo"


def load_results(backend: str) -> dict[str, dict]:
    """{model: {"task", "primary", "secondary", "family", "recipes": {r: (p, s)},
    "peers": {label: (p, s, deployable)}}} of every model with results."""
    from zoo import ZOO, get

    out = {}
    for name in ZOO:
        paths = sorted(ZOO_RESULTS.glob(f"{name}.recipes*.json")) + sorted(
            ZOO_RESULTS.glob(f"{name}.peers*.json")
        )
        if not paths:
            continue
        mod = get(name)
        res = {"entries": {}}
        for p in paths:
            res["entries"].update(json.loads(p.read_text()).get("entries", {}))
        m = {
            "task": mod.TASK,
            "primary": mod.PRIMARY,
            "secondary": mod.SECONDARY,
            "family": "transformer" if getattr(mod, "TRANSFORMER", False) else "conv",
            "recipes": {},
            "peers": {},
            "failed": {},
        }
        for key, e in res.get("entries", {}).items():
            metrics = (e.get("metrics") or {}).get(backend) or {}
            if not e.get("ok") or "failed" in metrics or mod.PRIMARY not in metrics:
                why = e.get("failed") or e.get("skipped") or metrics.get("failed") or "no metric"
                m["failed"][key] = why
                if e.get("kind") == "recipe" and "skipped" not in e:
                    # a recipe that fails on a model is a result: the worst rank there
                    m["recipes"][key.removeprefix("int8kit:")] = (float("-inf"), float("-inf"))
                continue
            score = (float(metrics[mod.PRIMARY]), float(metrics.get(mod.SECONDARY, 0.0)))
            if e.get("kind") == "peer":
                m["peers"][key] = (*score, bool(e.get("trt_deployable")))
            else:
                m["recipes"][key.removeprefix("int8kit:")] = score
        out[name] = m
    return out


def normalised_ranks(scores: dict[str, tuple[float, float]]) -> dict[str, float]:
    """0 = best, 1 = worst; tied recipes share their mean rank."""
    order = sorted(scores, key=lambda r: scores[r], reverse=True)
    n = len(order)
    ranks: dict[str, float] = {}
    i = 0
    while i < n:
        j = i
        while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for r in order[i : j + 1]:
            ranks[r] = ((i + j) / 2) / max(1, n - 1)
        i = j + 1
    return ranks


def best_recipe(results: dict, models: list[str], candidates: set[str]) -> tuple[str, float]:
    """The candidate with the smallest mean normalised rank over ``models``."""
    total = {r: 0.0 for r in candidates}
    for name in models:
        ranks = normalised_ranks({r: results[name]["recipes"][r] for r in candidates})
        for r in candidates:
            total[r] += ranks[r]
    best = min(sorted(total), key=lambda r: total[r])
    return best, total[best] / max(1, len(models))


def common_recipes(results: dict, models: list[str]) -> set[str]:
    sets = [set(results[m]["recipes"]) for m in models]
    return set.intersection(*sets) if sets else set()


def best_peer(m: dict, deployable_only: bool):
    peers = {k: v for k, v in m["peers"].items() if v[2] or not deployable_only}
    if not peers:
        return None, None
    k = max(peers, key=lambda p: peers[p][:2])
    return k, peers[k][:2]


def loo(results: dict, protocol: str) -> dict:
    names = list(results)
    rows = []
    for k in names:
        pool = [n for n in names if n != k]
        if protocol == "by-family":
            fam = [n for n in pool if results[n]["family"] == results[k]["family"]]
            pool = fam or pool
        # candidates: the recipes run on every model of the pool and on k
        chosen, score = best_recipe(results, pool, common_recipes(results, pool + [k]))
        rows.append(row_for(results, k, chosen, score, pool))
    default, counts = {}, {}
    groups = (
        {"all": names}
        if protocol == "global"
        else {
            fam: [n for n in names if results[n]["family"] == fam]
            for fam in ("conv", "transformer")
        }
    )
    for fam, members in groups.items():
        if members:
            cands = common_recipes(results, members)
            default[fam], counts[fam] = best_recipe(results, members, cands)[0], len(cands)
    return {"rows": rows, "default": default, "candidates": counts}


def row_for(results: dict, k: str, recipe: str, score: float, pool: list[str]) -> dict:
    m = results[k]
    ours = m["recipes"][recipe]
    dep_label, dep = best_peer(m, True)
    any_label, anyp = best_peer(m, False)
    return {
        "model": k,
        "chosen_on": pool,
        "recipe": recipe,
        "score_on_others": score,
        "primary": m["primary"],
        "value": ours[0],
        "secondary": m["secondary"],
        "secondary_value": ours[1],
        "best_trt_peer": dep_label,
        "best_trt_peer_value": dep[0] if dep else None,
        "best_peer": any_label,
        "best_peer_value": anyp[0] if anyp else None,
        "beats_trt_peer": dep is None or ours >= dep,
        "beats_any_peer": anyp is None or ours >= anyp,
    }


def default_table(results: dict, default: dict) -> list[dict]:
    """The chosen default (chosen on all models) on each model against the peers."""
    rows = []
    for k, m in results.items():
        recipe = default.get("all") or default.get(m["family"])
        if recipe in m["recipes"]:
            rows.append(row_for(results, k, recipe, float("nan"), list(results)))
    return rows


def fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(report: dict, backend: str) -> str:
    lines = [
        f"# Leave-one-model-out choice of the default (`{backend}` fidelity)",
        "",
        "Made by `.venv/bin/python benchmarks/choose_default.py` from `benchmarks/results/zoo/*.json`"
        " (`benchmarks/zoo_bench.py`). A recipe's value is the model's task metric against FP32;"
        ' ties are broken by the second metric. "≥ TRT peer": at least the best TensorRT-deployable'
        " peer (signed INT8, zero point 0, one scale per activation tensor).",
        "",
    ]
    for protocol, rep in report["protocols"].items():
        n_trt = sum(r["beats_trt_peer"] for r in rep["rows"])
        n_any = sum(r["beats_any_peer"] for r in rep["rows"])
        lines += [
            f"## Protocol `{protocol}`: default = {', '.join(f'{f}: `{r}`' for f, r in rep['default'].items())}",
            "",
            f"Left out model k, recipe chosen on the others (candidates run on every model: "
            f"{', '.join(f'{f} {n}' for f, n in rep['candidates'].items())}): "
            f"≥ best TRT-deployable peer on {n_trt}/{len(rep['rows'])}, ≥ best peer of any kind on "
            f"{n_any}/{len(rep['rows'])}.",
            "",
            "| model k | metric | recipe chosen without k | on k | best TRT peer | value | best peer (any) | value | ≥ TRT peer | ≥ any |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rep["rows"]:
            lines.append(
                f"| {r['model']} | {r['primary']} | `{r['recipe']}` | {fmt(r['value'])} | "
                f"{r['best_trt_peer'] or '—'} | {fmt(r['best_trt_peer_value'])} | "
                f"{r['best_peer'] or '—'} | {fmt(r['best_peer_value'])} | "
                f"{'yes' if r['beats_trt_peer'] else '**no**'} | {'yes' if r['beats_any_peer'] else 'no'} |"
            )
        d = rep["default_rows"]
        lines += [
            "",
            f"The default of `{protocol}` on every model: ≥ best TRT peer on "
            f"{sum(r['beats_trt_peer'] for r in d)}/{len(d)}, ≥ best peer of any kind on "
            f"{sum(r['beats_any_peer'] for r in d)}/{len(d)}.",
            "",
            "| model | metric | default | best TRT peer | value | best peer (any) | value |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in d:
            lines.append(
                f"| {r['model']} | {r['primary']} | {fmt(r['value'])} (`{r['recipe']}`) | "
                f"{r['best_trt_peer'] or '—'} | {fmt(r['best_trt_peer_value'])} | "
                f"{r['best_peer'] or '—'} | {fmt(r['best_peer_value'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="trt-like")
    a = p.parse_args(argv)
    results = load_results(a.backend)
    if len(results) < 2:
        raise SystemExit("need results of at least two zoo models: run benchmarks/zoo_bench.py")
    report = {"backend": a.backend, "models": list(results), "protocols": {}}
    for protocol in ("global", "by-family"):
        rep = loo(results, protocol)
        rep["default_rows"] = default_table(results, rep["default"])
        report["protocols"][protocol] = rep
    save_json(RESULTS / "zoo_loo.json", report)
    md = markdown(report, a.backend)
    (RESULTS / "zoo_loo.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
