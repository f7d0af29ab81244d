import json

import torch

from simformer.utils import env


def test_cpu_model_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert env.cpu_model(str(info)) == "AMD EPYC 7B13"


def test_cpu_model_without_cpuinfo_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(env.platform, "processor", lambda: "")
    assert env.cpu_model(str(tmp_path / "missing")) is None


def test_run_info_records_what_changes_cpu_results():
    info = json.loads(json.dumps(env.run_info()))  # written as JSON next to every run
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpu"] == env.cpu_model()


def test_preserved_rng_restores_every_global_generator():
    import random

    import numpy as np

    env.seed_all(7)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    env.seed_all(7)
    with env.preserved_rng():
        random.random(), np.random.rand(3), torch.rand(5), torch.randperm(9)  # what an evaluation may draw
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    env.seed_all(7)
    try:  # restored on an exception too
        with env.preserved_rng():
            torch.rand(4)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert float(torch.rand(())) == expected[2]
