"""rsdt_beam: remote sensing deep-temporal data preparation as an Apache Beam pipeline.

`--setup_file ./setup.py` installs this package and its dependencies on Dataflow workers.
"""

from setuptools import find_packages, setup

setup(
    name="rsdt_beam",
    version="0.1.0",
    description="Remote sensing deep-temporal data (rsdtlib's Stages 1-3) as Apache Beam pipelines",
    license="GPL-3.0-or-later",
    python_requires=">=3.10",
    packages=find_packages(include=["rsdt_beam", "rsdt_beam.*"]),
    install_requires=[
        "apache-beam[gcp]>=2.60,<3",
        "numpy>=1.26,<2.5",
        "rasterio>=1.3",
        "sentinelhub>=3.9,<4",
        "google-cloud-storage>=2.10",
        "google-crc32c>=1.5",
        "isal>=1.6",  # ISA-L deflate for GZIP levels 1-3 (zlib is the fallback)
        "shapely>=2.0",
        "pyogrio>=0.7",
    ],
    extras_require={"tensorflow": ["tensorflow-cpu>=2.15"], "torch": ["torch>=2.1"]},
)
