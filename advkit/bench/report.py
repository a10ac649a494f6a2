"""Write a bench report: ``results.json`` (everything), ``results.csv`` (one row per number),
``results.md`` (tables laid out like the papers') and PNG plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from advkit.bench.plot import line_plot, scatter_plot
from advkit.utils import atomic_path

CSV_FIELDS = ("suite", "mode", "model", "defense_or_method", "eps", "n", "metric", "value")


def _step_text(cfg: dict[str, Any]) -> str:
    """The adaptive step as eps/k (older reports, made before it was recorded, used eps/30)."""
    rel = cfg.get("adaptive_rel_step") or 1 / 30
    return f"eps/{1 / rel:.3g}"


def _black_box_attacks() -> tuple[str, ...]:
    from advkit.bench.robustness import BLACK_BOX_ATTACKS  # lazily: it imports torch

    return BLACK_BOX_ATTACKS


def adaptive_attack_label(cfg: dict[str, Any], steps: int | None = None) -> str:
    """'PGD-40 (step eps/16)' or 'APGD-DLR-40' for the adaptive attack of a report's config
    (``steps`` instead of the configured count: the sanity check's)."""
    name = cfg.get("adaptive_attack", "pgd")
    count = cfg["adaptive_steps"] if steps is None else steps
    eot = cfg.get("adaptive_eot") or 1
    eot_text = f"EOT over {eot} draws" if eot > 1 else ""
    if name == "pgd":
        notes = ([f"step {_step_text(cfg)}"] if steps is None else []) + ([eot_text] if eot_text else [])
        return f"PGD-{count}" + (f" ({', '.join(notes)})" if notes else "")
    if name == "square":
        return f"Square ({count} queries, black box)"
    if name == "spsa":
        return f"SPSA-{count} (128 directions per step, black box)"
    if name == "hopskipjump":
        return f"HopSkipJump-{count} (L∞, top-1 labels only, black box)"
    if name == "autoattack":
        from advkit.bench.robustness import AUTOATTACK_QUERIES_PER_STEP  # lazily: it imports torch

        return (f"AutoAttack (APGD-CE, APGD-T{f' with {eot_text}' if eot_text else ''}, FAB-T: {count} iterations; "
                f"Square: {AUTOATTACK_QUERIES_PER_STEP * count} queries)")
    if name == "autoattack-rand":
        return f"AutoAttack rand (APGD-CE, APGD-DLR: {count} iterations, {eot_text or 'no EOT'})"
    return f"{name.upper()}-{count}" + (f" ({eot_text})" if eot_text else "")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report flattened to (suite, mode, model, defense/method, eps, n, metric, value) rows."""
    rows: list[dict[str, Any]] = []
    suite = report["suite"]
    for mode in ("oblivious", "adaptive"):
        for model, defenses in report.get(mode, {}).items():
            for name, entry in defenses.items():
                for cell in entry["per_eps"]:
                    for metric in ("accuracy", "accuracy_all_draws", "accuracy_undefended", "psnr"):
                        if cell.get(metric) is not None:
                            rows.append({"suite": suite, "mode": mode, "model": model, "defense_or_method": name,
                                         "eps": cell["eps"], "n": cell["n"], "metric": metric,
                                         "value": cell[metric]})
                if "sanity" in entry:
                    s = entry["sanity"]
                    rows.append({"suite": suite, "mode": mode, "model": model, "defense_or_method": name,
                                 "eps": s["eps"], "n": s["n"], "metric": "sanity_accuracy", "value": s["accuracy"]})
    for model, result in report.get("pasadena", {}).items():
        for method, r in result["methods"].items():
            metrics = {k: r[k] for k in ("success", "success_on_correct", "psnr", "ssim", "psnr_l", "brisque")}
            metrics.update({f"transfer_{t}": v for t, v in r["transfer"].items()})
            for metric, value in metrics.items():
                if value is not None:
                    rows.append({"suite": suite, "mode": "white-box", "model": model, "defense_or_method": method,
                                 "eps": result["baseline_eps"] if method not in ("pasadena", "denoise") else "",
                                 "n": r["n"], "metric": metric, "value": value})
    for model, sweep in report.get("pasadena_sweep", {}).items():
        for method, points in sweep["curves"].items():
            for p in points:
                for metric in ("success", "psnr", "ssim", "psnr_l", "brisque"):
                    rows.append({"suite": suite, "mode": f"sweep {_sweep_param(p)}", "model": model,
                                 "defense_or_method": method, "eps": p.get("eps", ""), "n": p["n"],
                                 "metric": metric, "value": p[metric]})
    return rows


def _sweep_param(point: dict[str, Any]) -> str:
    if "eps" in point:
        return f"eps={point['eps'] * 255:.3g}/255"
    if "confidence" in point:
        return f"kappa={point['confidence']:g}"
    return f"lam={point['lam']:g} theta={point['theta']:g}"


def display_name(name: str) -> str:
    """A defense given as a checkpoint path is shown by its file name."""
    return Path(name).name if ("/" in name or "\\" in name) else name


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _accuracy_text(cell: dict[str, Any]) -> str:
    """A table cell: the accuracy, with the every-draw accuracy in brackets for repeated draws."""
    text = _pct(cell.get("accuracy"))
    if cell.get("accuracy_all_draws") is not None:
        text += f" [{_pct(cell['accuracy_all_draws'])}]"
    return text


def markdown(report: dict[str, Any]) -> str:
    """Tables as in the papers: accuracy (%) per defense (rows) and radius (columns)."""
    lines = [f"# advkit bench — {report['suite']} suite", ""]
    cfg = report["config"]
    images = report.get("images", cfg["n"])
    count = f"{images} images" + (f" (--n {cfg['n']}: the data holds no more)" if images < cfg["n"] else "")
    lines += [f"Models {', '.join(cfg['models'])}; {count}; device {report['device']}; "
              f"seed {cfg['seed']}; wall time of this invocation {report['wall_time_s']:.0f} s; advkit {report['versions']['advkit']}.", ""]
    titles = {
        "oblivious": f"Oblivious: PGD-{cfg['steps']} on the bare classifier, then the defense. Accuracy (%).",
        "adaptive": (f"Adaptive: {adaptive_attack_label(cfg)} through defense ∘ classifier ("
                     + ("model outputs only" if cfg.get("adaptive_attack") in _black_box_attacks() else
                        "exact gradients, or BPDA where a defense is not differentiable: the gradient column "
                        "says which stand-in")
                     + f"). Accuracy (%). Sanity: accuracy under unbounded "
                     f"{adaptive_attack_label(cfg, cfg['sanity_steps'])} (eps = 1); 'gradient masked' means the "
                     "attack could not follow the gradient and the row is not a robustness bound."),
    }
    for mode in ("oblivious", "adaptive"):
        for model, defenses in report.get(mode, {}).items():
            unaveraged = [name for name, e in defenses.items() if e.get("randomized")] if mode == "adaptive" else []
            if unaveraged and (cfg.get("adaptive_eot") or 1) == 1:
                lines += [f"Randomized defenses attacked without EOT ({', '.join(map(display_name, unaveraged))}): "
                          "each step followed one random draw, so their rows can overstate robustness; "
                          "rerun with --adaptive-eot N.", ""]
            radii = [c["eps"] for c in next(iter(defenses.values()))["per_eps"]]
            head = ["defense", *("clean" if e == 0 else f"{e:g}" for e in radii)]
            if mode == "adaptive":
                head += ["gradient", "sanity"]
            lines += [f"## {model} — {titles[mode]}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            if mode == "oblivious":
                first = next(iter(defenses.values()))["per_eps"]
                undefended = [_pct(c.get("accuracy_undefended")) for c in first]
                lines.append("| (attacked, no defense) | " + " | ".join(undefended) + " |")
            for name, entry in defenses.items():
                cells = [_accuracy_text(c) for c in entry["per_eps"]]
                if mode == "adaptive":
                    s = entry["sanity"]
                    cells += [entry["gradient"], f"{_pct(s['accuracy'])} ({s['verdict']})"]
                lines.append(f"| {display_name(name)} | " + " | ".join(cells) + " |")
            lines.append("")
            draws = sorted({c["draws"] for e in defenses.values() for c in e["per_eps"] if c.get("draws")})
            if draws:
                lines += [f"Randomized defenses classified {' / '.join(map(str, draws))} times per image: mean "
                          "accuracy over the draws [accuracy under every draw].", ""]
            if mode == "oblivious":
                lines += _oblivious_extras(defenses, head)
    for model, result in report.get("pasadena", {}).items():
        targets = sorted({t for r in result["methods"].values() for t in r["transfer"]})
        head = ["method", "success", "on correct", *(f"→ {t}" for t in targets), "PSNR", "SSIM", "PSNR_L", "BRISQUE"]
        lines += [f"## Pasadena — source {model} (noisy input σ = {result['sigma']:g}: PSNR "
                  f"{result['noisy']['psnr']:.2f}, SSIM {result['noisy']['ssim']:.3f})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, r in result["methods"].items():
            lines.append("| " + " | ".join([
                method, _pct(r["success"]), _pct(r["success_on_correct"]),
                *(_pct(r["transfer"].get(t)) for t in targets),
                f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['psnr_l']:.2f}", f"{r['brisque']:.1f}",
            ]) + " |")
        lines.append("")
    for model, sweep in report.get("pasadena_sweep", {}).items():
        lines += [f"## Pasadena sweep — source {model}: success vs SSIM (the paper's Fig. 4)", "",
                  "| method | setting | success | SSIM | PSNR | PSNR_L | BRISQUE |", "|---|---|---|---|---|---|---|"]
        for method, points in sweep["curves"].items():
            for p in points:
                lines.append(f"| {method} | {_sweep_param(p)} | {_pct(p['success'])} | {p['ssim']:.3f} | "
                             f"{p['psnr']:.2f} | {p['psnr_l']:.2f} | {p['brisque']:.1f} |")
        if sweep["dominance"]:
            lines += ["", "Points of each baseline's curve that a Pasadena point matches or beats on both success "
                      "and SSIM (all = Pasadena's curve lies above that baseline's):", ""]
            for method, d in sweep["dominance"].items():
                verdict = "above" if d["dominated"] == d["points"] else "not above"
                lines.append(f"- {method}: {d['dominated']}/{d['points']} ({verdict})")
        lines.append("")
    return "\n".join(lines)


def recovered_share(clean: float | None, attacked: float | None, defended: float | None) -> float | None:
    """(defended − attacked) / (clean − attacked): the share of the attack's damage a defense undoes."""
    if clean is None or attacked is None or defended is None or clean - attacked <= 0:
        return None
    return (defended - attacked) / (clean - attacked)


def _oblivious_extras(defenses: dict[str, Any], head: list[str]) -> list[str]:
    """The recovered share and the mean PSNR to the clean image, per defense and radius."""
    first = next(iter(defenses.values()))["per_eps"]
    clean = first[0].get("accuracy_undefended") if first[0]["eps"] == 0 else None
    lines = ["Recovered share (defended − attacked) / (clean − attacked), clean = the undefended clean accuracy:",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in defenses.items():
        cells = []
        for base, cell in zip(first, entry["per_eps"]):
            rec = None if cell["eps"] == 0 else recovered_share(clean, base.get("accuracy_undefended"),
                                                                 cell.get("accuracy"))
            cells.append("—" if rec is None else f"{rec:.2f}")
        lines.append(f"| {display_name(name)} | " + " | ".join(cells) + " |")
    lines += ["", "Mean PSNR (dB) of the defended image against the clean image:", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in defenses.items():
        cells = ["—" if c.get("psnr") is None else f"{c['psnr']:.2f}" for c in entry["per_eps"]]
        lines.append(f"| {display_name(name)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plots(report: dict[str, Any], out: Path) -> list[str]:
    """PNG plots: accuracy vs eps (log axis) per defense, per mode and model; success vs SSIM."""
    written = []
    for mode in ("oblivious", "adaptive"):
        for model, defenses in report.get(mode, {}).items():
            series = {display_name(name): ([c["eps"] for c in e["per_eps"]], [c.get("accuracy") for c in e["per_eps"]])
                      for name, e in defenses.items()}
            if mode == "oblivious":
                first = next(iter(defenses.values()))["per_eps"]
                series = {"no defense (attacked)": ([c["eps"] for c in first],
                                                    [c.get("accuracy_undefended") for c in first]), **series}
            name = f"accuracy_vs_eps_{mode}_{model}.png"
            attack = "PGD" if mode == "oblivious" else adaptive_attack_label(report["config"]).split(" ")[0]
            line_plot(series, out / name, title=f"{model}: accuracy under {mode} {attack}", xlabel="eps (L-inf, log)",
                      ylabel="accuracy")
            written.append(name)
    for model, result in report.get("pasadena", {}).items():
        points = {m: (r["ssim"], r["success"]) for m, r in result["methods"].items()}
        name = f"success_vs_ssim_{model}.png"
        scatter_plot(points, out / name, title=f"Pasadena suite, source {model}", xlabel="SSIM to clean",
                     ylabel="white-box success")
        written.append(name)
    for model, sweep in report.get("pasadena_sweep", {}).items():
        series = {}
        for method, points in sweep["curves"].items():
            # Pasadena's (λ, θ) grid is not a curve by itself: its upper envelope over SSIM is.
            pts = _upper_envelope(points) if method == "pasadena" else points
            series[method] = ([p["ssim"] for p in pts], [p["success"] for p in pts])
        name = f"success_vs_ssim_sweep_{model}.png"
        line_plot(series, out / name, title=f"Pasadena sweep, source {model}", xlabel="SSIM to clean",
                  ylabel="white-box success", logx=False)
        written.append(name)
    return written


def at_least_as_good(q: dict[str, Any], p: dict[str, Any]) -> bool:
    """Sweep point ``q`` matches or beats ``p`` on both SSIM and success."""
    return q["ssim"] >= p["ssim"] and q["success"] >= p["success"]


def _upper_envelope(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both SSIM and success (the Pareto front), by SSIM."""
    front = [p for p in points
             if not any(at_least_as_good(q, p) and not at_least_as_good(p, q) for q in points)]
    return sorted(front, key=lambda p: p["ssim"])


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write every output file into ``out`` (each atomically) and list the plots in ``report``."""
    report["plots"] = plots(report, out)
    _write_text(out / "results.json", json.dumps(report, indent=2, default=float) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(csv_rows(report))
    _write_text(out / "results.csv", buf.getvalue())
    _write_text(out / "results.md", markdown(report) + "\n")
