"""--cpu-isa: the choice, the variables it sets, the checks, and a fresh process that runs it."""
import json
import os
import subprocess
import sys

import pytest
import torch

from simformer.utils import cpu_isa
from simformer.utils.cpu_isa import ISA_ENV, check_cpu_isa, pin_cpu_isa, requested_cpu_isa

PINNED_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA", ISA_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for k in PINNED_VARS:
        monkeypatch.setenv(k, "")  # recorded, so that what pin_cpu_isa sets is undone after the test
        monkeypatch.delenv(k)
    return monkeypatch


def test_choice_order_and_native(clean_env):
    assert requested_cpu_isa() is None
    clean_env.setenv(ISA_ENV, "avx512")
    assert requested_cpu_isa() == "avx512"
    assert requested_cpu_isa("avx2") == "avx2"  # the option wins over the environment
    assert requested_cpu_isa("native") is None
    clean_env.setenv(ISA_ENV, "sse9")
    with pytest.raises(ValueError, match=r"SIMFORMER_CPU_ISA.*'sse9'.*avx2, avx512, native"):
        requested_cpu_isa()


def test_pin_sets_all_three_libraries(clean_env):
    clean_env.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert pin_cpu_isa("avx2") == "avx2"
    assert [os.environ[k] for k in PINNED_VARS] == ["avx2", "AVX2", "AVX2", "avx2"]
    assert pin_cpu_isa(None) == "avx2"  # a child process: the environment carries the choice
    clean_env.delenv(ISA_ENV)
    assert pin_cpu_isa(None) is None


def test_pin_after_torch_started_with_another_set_is_an_error(clean_env):
    clean_env.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with pytest.raises(RuntimeError, match=r"--cpu-isa avx2: torch was imported .* runs AVX512"):
        pin_cpu_isa("avx2")
    assert ISA_ENV not in os.environ  # nothing half-set


def test_check_names_what_the_cpu_lacks(clean_env):
    assert check_cpu_isa() is None
    clean_env.setenv(ISA_ENV, "avx512")
    clean_env.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with pytest.raises(RuntimeError, match=r"SIMFORMER_CPU_ISA=avx512: this CPU runs AVX2 kernels"):
        check_cpu_isa()
    clean_env.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert check_cpu_isa() == "avx512"


@pytest.mark.parametrize("isa, flag", [("avx2", "avx2"), ("avx512", "avx512f")])
def test_fresh_process_runs_the_pinned_set_and_records_it(clean_env, isa, flag):
    """A new Python that pins before importing torch runs that set's kernels, under torch's own
    name for them (on an AVX512 CPU the avx2 pin is a real downgrade; a CPU lacking the set skips)
    and run_info records the pin."""
    if not cpu_isa.cpu_has(flag):
        pytest.skip(f"a CPU without {flag}")
    code = (f"from simformer.utils.cpu_isa import pin_cpu_isa; pin_cpu_isa({isa!r}); import json, torch; "
            "from simformer.utils.env import run_info; i = run_info(); "
            "print(json.dumps([torch.backends.cpu.get_cpu_capability(), i['cpu_capability'], i['cpu_isa']]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    expected = cpu_isa.ISA_SETTINGS[isa][1]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, expected, isa]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert cpu_isa.cpu_has("avx2", str(info)) and not cpu_isa.cpu_has("avx512f", str(info))
    assert not cpu_isa.cpu_has("avx2", str(tmp_path / "missing"))


def test_demo_pins_avx2_unless_told_otherwise(clean_env):
    """The quick start's figure was measured with AVX2 kernels: `simformer demo` pins them by
    default where the CPU has AVX2; --cpu-isa or $SIMFORMER_CPU_ISA win; other verbs pin nothing."""
    import simformer.cli as cli
    from simformer.commands import demo

    seen = []
    clean_env.setattr(cli, "pin_cpu_isa", seen.append)
    clean_env.setattr(cli, "configure_threads", lambda *a, **k: 1)
    clean_env.setattr(demo, "run", lambda args: 0)
    clean_env.setattr(cpu_isa, "cpu_has", lambda flag, cpuinfo="": flag == "avx2")
    assert cli.main(["demo"]) == 0 and seen == ["avx2"]
    assert cli.main(["demo", "--cpu-isa", "native"]) == 0 and seen[-1] == "native"
    clean_env.setattr(cpu_isa, "cpu_has", lambda flag, cpuinfo="": False)
    assert cli.main(["demo"]) == 0 and seen[-1] is None  # a CPU without AVX2: its own kernels
    clean_env.setattr(cpu_isa, "cpu_has", lambda flag, cpuinfo="": True)
    clean_env.setenv(ISA_ENV, "avx512")
    assert cli.main(["demo"]) == 0 and seen[-1] is None  # pin_cpu_isa then reads the environment's choice
    assert not hasattr(cli.build_parser().parse_args(["train", "--config", "x.yaml"]), "default_cpu_isa")
