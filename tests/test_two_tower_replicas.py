"""In-batch negatives across replicas: two replicas compute the loss and gradients of one."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

# Two logical CPUs must be configured before TensorFlow starts, hence a process of its own.
SCRIPT = """
import json
import numpy as np
import tensorflow as tf
import tf_keras as keras
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from pipelines.core.config import ModelConfig
from trainer.inputs import FeatureInput
from trainer.interactions import Interactions
from trainer.models import build_two_tower

features = {"user": FeatureInput("user", "ids", 4, 3), "item": FeatureInput("item", "ids", 6, 3)}
data = Interactions(seen={0: {1}, 1: {2}}, counts=np.array([0, 3, 2, 2, 1, 0]),
                    features={i: {"item": i} for i in (1, 2, 3, 4)})
config = ModelConfig(kind="two_tower", query=("user",), candidate=("item",), embedding_dim=3, hidden_units=(),
                     temperature=0.5)
batch = {"user": tf.constant([0, 1, 2, 3, 0, 1, 2, 3], tf.int64),
         "item": tf.constant([1, 2, 3, 1, 4, 2, 1, 3], tf.int64)}   # repeated items: accidental hits
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(5)
    net = build_two_tower(config, features, data)
    net(batch)

def loss_and_gradients(features, replicas):
    with tf.GradientTape() as tape:
        loss = net.compute_batch_loss(features, training=True)
        scaled = loss / replicas
    return loss, tape.gradient(scaled, net.trainable_variables)

@tf.function
def replica_step(features):
    return loss_and_gradients(features, 2)

# The global batch of 8 split into 4 rows per replica, as Keras distributes it.
dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
losses, gradients = strategy.run(replica_step, args=(next(iter(dataset)),))
split = {"loss": float(strategy.reduce("MEAN", losses, axis=None)),
         "gradients": [tf.convert_to_tensor(strategy.reduce("SUM", g, axis=None)).numpy().tolist() for g in gradients],
         "replicas": strategy.num_replicas_in_sync}
loss, gradients = loss_and_gradients(batch, 1)
one = {"loss": float(loss), "gradients": [tf.convert_to_tensor(g).numpy().tolist() for g in gradients]}
print(json.dumps({"split": split, "one": one}))
"""


def test_two_replicas_see_the_negatives_of_one():
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    split, one = measured["split"], measured["one"]
    assert split["replicas"] == 2
    assert split["loss"] == pytest.approx(one["loss"], rel=1e-5)   # without the gather: 2.28 vs 2.95
    assert len(split["gradients"]) == len(one["gradients"]) == 2          # the user and item tables
    for gathered, single in zip(split["gradients"], one["gradients"]):
        np.testing.assert_allclose(gathered, single, rtol=1e-5, atol=1e-6)
