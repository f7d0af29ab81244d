"""The GPU tables of docs/benchmarks.md (section 6) from the committed logs of one GPU lease:

    python analysis/gpu_report.py docs/results/gpu --doc docs/benchmarks.md

DIR/suite.log           what ``bash benchmarks/gpu_suite.sh DIR`` wrote: the machine, then one section
                        per check (``=== HH:MM:SS TITLE: command`` ... ``=== HH:MM:SS TITLE: exit N``)
                        holding benchmarks/gpu.py and benchmarks/cmt_step_time.py output
DIR/cmt_variants.log    (optional) ``benchmarks/cmt_step_time.py ... --variants ...`` output
DIR/toyscenes_amp_{False,True}_metrics.json and _log.txt   the suite's two ToyScenes trainings

Each figure is read from a benchmark's ``RESULT`` line or a training's metrics.json and log, so the
block "gpu" is regenerated, never typed. ``--cpu-run`` names a CPU run's metrics.json of the same
method and seed to print beside the GPU trainings.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from markdown_blocks import replace_block  # noqa: E402
from _common import parse_result  # noqa: E402

_SECTION = re.compile(r"^=== \d\d:\d\d:\d\d (?P<title>[^:]+): (?P<rest>.*)$")
_FINISHED = re.compile(r"Training finished in (?P<total>[\d.]+) s \(median step (?P<step>[\d.]+) s\)")
CMT_VARIANTS = (("cmt_off", "every CMT term off (decoder on the stride-8 map only)"),
                ("cmt_cluster", "+ clustering update (Eq. 7)"), ("cmt_pixel", "+ pixel update (Eq. 8)"),
                ("cmt_noloc", "all but location-sensitive clustering"), ("cmt_nocontrast", "all but the contrastive loss"),
                ("cmt", "full CMT decoder"))


def sections(text: str) -> Dict[str, str]:
    """``{title: output}`` of a gpu_suite.sh log; lines before the first section go under "machine"."""
    out: Dict[str, List[str]] = {"machine": []}
    current = "machine"
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            current = m["title"]
            out.setdefault(current, [])
            if m["rest"].startswith("exit "):
                out[current].append(f"EXIT {m['rest'][5:]}")
            continue
        out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def _training(folder: str, amp: bool) -> dict:
    stem = os.path.join(folder, f"toyscenes_amp_{amp}")
    with open(stem + "_metrics.json") as f:
        metrics = json.load(f)
    with open(stem + "_log.txt") as f:
        m = _FINISHED.search(f.read())
    return dict(metrics, train_s=float(m["total"]) if m else float("nan"), step_s=float(m["step"]) if m else float("nan"))


def build(folder: str, doc: str = "", cpu_run: str = "") -> str:
    with open(os.path.join(folder, "suite.log")) as f:
        sec = sections(f.read())
    machine = "; ".join(ln.strip() for ln in sec["machine"].splitlines()[1:] if ln.strip())
    g = parse_result(sec["gpu.py"])
    lines = [f"Machine: {machine}. Source: `{folder}` (regenerate: `python analysis/gpu_report.py {folder} "
             f"--doc docs/benchmarks.md`).", "",
             f"**Paper-scale training step** (`configs/ade20k/simformer_R50.yaml`, random init, batch {g['batch']}, "
             "512 px crops, bf16 autocast, synthetic batches; median of 10 alternating steps):", "",
             "| model | images/s | peak allocated (MiB) |", "|---|---:|---:|",
             f"| MaskFormer | {g['maskformer_img_s']:.1f} | {g['maskformer_mib']:.0f} |",
             f"| SimFormer (4 images + 4 references) | {g['simformer_img_s']:.1f} | {g['simformer_mib']:.0f} |", "",
             f"SimFormer / MaskFormer step time: **{g['step_ratio']:.2f}x** (median of per-round ratios). "
             f"Inference (fp32, 512 x 683): **{g['infer_img_s']:.1f} images/s**.", "",
             "| SimFormer sweep | step (s) | peak allocated (MiB) |", "|---|---:|---:|"]
    for prefix, label in (("crop", "crop {} px"), ("q", "{} queries"), ("j", "J = {} points")):
        for key in sorted((k for k in g if re.fullmatch(prefix + r"\d+_s", k)), key=lambda k: int(k[len(prefix):-2])):
            n = key[len(prefix):-2]
            lines.append(f"| {label.format(n)} | {g[key]:.3f} | {g[f'{prefix}{n}_mib']:.0f} |")
    lines += ["", "**CMT decoder vs MaskFormer decoder, paper scale** (`configs/ade20k/simformer_cmt_R50.yaml`, "
              "batch 8, 512 px; ratio = median of per-round step-time ratios, target <= 1.15):", "",
              "| variant | precision | step (s) | ratio | memory ratio |", "|---|---|---:|---:|---:|"]
    for title, precision in (("cmt fp32", "fp32"), ("cmt bf16", "bf16")):
        if title in sec:
            r = parse_result(sec[title])
            lines.append(f"| full CMT decoder | {precision} | {r['cmt_s']:.3f} | {r['ratio']:.2f}x | {r['mem_ratio']:.2f}x |")
    variants_log = os.path.join(folder, "cmt_variants.log")
    if os.path.isfile(variants_log):
        with open(variants_log) as f:
            r = parse_result(f.read())
        for name, label in CMT_VARIANTS:
            if f"{name}_s" in r:
                ratio = r["ratio"] if name == "cmt" else r[f"{name}_ratio"]
                mem = r["mem_ratio"] if name == "cmt" else r[f"{name}_mem_ratio"]
                lines.append(f"| {label} | bf16 (second run) | {r[f'{name}_s']:.3f} | {ratio:.2f}x | {mem:.2f}x |")
    rows = [("GPU fp32", _training(folder, False)), ("GPU bf16 autocast", _training(folder, True))]
    if cpu_run:
        with open(cpu_run) as f:
            rows.append((f"CPU fp32 (`{cpu_run}`)", dict(json.load(f), train_s=float("nan"), step_s=float("nan"))))
    lines += ["", "**AMP end to end**: the ToyScenes recipe (`configs/toyscenes/simformer_cmt.yaml`, split1, seed 1, "
              "900 iterations), both GPU runs side by side on the one GPU (n = 1 each):", "",
              "| run | novel mIoU | base mIoU | mIoU | HM | training (s) | median step (s) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label, m in rows:
        times = ("–", "–") if m["train_s"] != m["train_s"] else (f"{m['train_s']:.0f}", f"{m['step_s']:.3f}")
        lines.append(f"| {label} | {m['novel_miou']:.1f} | {m['base_miou']:.1f} | {m['miou']:.1f} | {m['hm']:.1f} | "
                     f"{times[0]} | {times[1]} |")
    text = "\n".join(lines) + "\n"
    if doc:
        replace_block(doc, "gpu", text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--doc", default="", help="Markdown file whose 'gpu' block to rewrite")
    p.add_argument("--cpu-run", default="", help="a CPU run's metrics.json to print beside the GPU trainings")
    args = p.parse_args(argv)
    print(build(args.folder, args.doc, args.cpu_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
