"""analysis/gpu_report.py: figures read from a gpu_suite.sh log and the training files, by hand."""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import gpu_report  # noqa: E402

LOG = """name, memory.total [MiB], driver_version
Fake GPU, 1000 MiB, 1.0
=== 10:00:00 gpu.py: python3 benchmarks/gpu.py
train maskformer: ...
RESULT gpu=Fake maskformer_img_s=80 maskformer_mib=6000 simformer_img_s=64 simformer_mib=6400 step_ratio=1.25 infer_img_s=81 crop512_s=0.15 crop512_mib=7000 crop384_s=0.12 crop384_mib=5000 q100_s=0.12 q100_mib=8000 j50_s=0.14 j50_mib=9000 batch=8
=== 10:01:00 gpu.py: exit 0
=== 10:01:00 cmt fp32: python3 benchmarks/cmt_step_time.py --config c.yaml
RESULT maskformer_s=0.1 maskformer_mib=5000 cmt_s=0.2 cmt_mib=8000 ratio=2 mem_ratio=1.6 batch=8 size=512
=== 10:01:20 cmt fp32: exit 124
"""


def _training(folder, amp, novel, step):
    metrics = {"novel_miou": novel, "base_miou": 80.0, "miou": 75.0, "hm": 70.0}
    (folder / f"toyscenes_amp_{amp}_metrics.json").write_text(json.dumps(metrics))
    (folder / f"toyscenes_amp_{amp}_log.txt").write_text(f"x\n[t simformer] Training finished in 190.5 s "
                                                        f"(median step {step} s)\n")


def test_sections_keep_each_checks_output_and_exit_code():
    sec = gpu_report.sections(LOG)
    assert sec["machine"].splitlines()[1] == "Fake GPU, 1000 MiB, 1.0"
    assert sec["gpu.py"].splitlines()[-1] == "EXIT 0"
    assert sec["cmt fp32"].splitlines()[-1] == "EXIT 124"
    assert "RESULT maskformer_s=0.1" in sec["cmt fp32"]


def test_block_holds_the_logged_figures(tmp_path):
    (tmp_path / "suite.log").write_text(LOG)
    _training(tmp_path, False, 69.84, 0.202)
    _training(tmp_path, True, 65.66, 0.21)
    doc = tmp_path / "doc.md"
    text = gpu_report.build(str(tmp_path), str(doc))
    assert "| MaskFormer | 80.0 | 6000 |" in text
    assert "**1.25x**" in text and "**81.0 images/s**" in text
    crop_rows = [r for r in text.splitlines() if r.startswith("| crop")]
    assert crop_rows == ["| crop 384 px | 0.120 | 5000 |", "| crop 512 px | 0.150 | 7000 |"]  # numeric order
    assert "| full CMT decoder | fp32 | 0.200 | 2.00x | 1.60x |" in text
    assert "| GPU fp32 | 69.8 | 80.0 | 75.0 | 70.0 | 190 | 0.202 |" in text  # 190.5 -> 190 (round half even)
    assert "| GPU bf16 autocast | 65.7 |" in text
    assert "<!-- generated:gpu -->" in doc.read_text()
