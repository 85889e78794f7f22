"""Trainer: the retrieval loss by hand, training on the taxi sample, the self-contained export."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipelines.core.rundir import RunDir
from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config
from trainer.losses import in_batch_softmax_loss
from trainer.models import class_counts, class_log_shares, label_mean
from trainer.train import Trainer, embedding_layers


def test_in_batch_softmax_loss_matches_hand_computation():
    query = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    candidate = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    ids = tf.constant([5, 5, 7], tf.int64)          # rows 0 and 1 hold the same candidate
    log_prob = tf.constant([math.log(0.5), math.log(0.5), math.log(0.25)])
    # logits = q.c / 0.5 - log p:  row 0: [2+ln2, (masked), 0+ln4]; row 1: [(masked), 0+ln2, 4+ln4];
    # row 2: [2+ln2, 2+ln2, 4+ln4]. Cross-entropy of the diagonal:
    ln2, ln4 = math.log(2), math.log(4)
    row0 = -(2 + ln2) + math.log(math.exp(2 + ln2) + math.exp(ln4))
    row1 = -ln2 + math.log(math.exp(ln2) + math.exp(4 + ln4))
    row2 = -(4 + ln4) + math.log(2 * math.exp(2 + ln2) + math.exp(4 + ln4))
    loss = in_batch_softmax_loss(query, candidate, ids, temperature=0.5, candidate_log_prob=log_prob)
    assert float(loss) == pytest.approx((row0 + row1 + row2) / 3, rel=1e-5)
    assert (row0 + row1 + row2) / 3 == pytest.approx(1.68959, abs=1e-4)
    plain = in_batch_softmax_loss(query, candidate, tf.constant([1, 2, 3], tf.int64), temperature=1.0)
    logits = np.array([[1, 1, 0], [0, 0, 2], [1, 1, 2]], np.float64)
    expected = np.mean([np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(logits)])
    assert float(plain) == pytest.approx(expected, rel=1e-5)


def test_in_batch_loss_with_other_replicas_candidates():
    # This replica's queries are rows 2 and 3 of a global batch of 4 candidates (columns 2 and 3).
    query = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    candidate = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    ids = tf.constant([5, 5, 7, 5], tf.int64)
    # row 0 aims at column 2 (id 7), logits [1, 1, 0, 3]; row 1 at column 3 (id 5): columns 0 and 1
    # hold id 5 too and are masked, logits [-, -, 2, 0].
    row0 = math.log(2 * math.e + 1 + math.exp(3))
    row1 = math.log(math.exp(2) + 1)
    loss = in_batch_softmax_loss(query, candidate, ids, temperature=1.0, positives=tf.constant([2, 3]))
    assert float(loss) == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_taxi_training_beats_baselines_and_reduces_loss(taxi_run):
    metrics = json.loads((taxi_run / "metrics.json").read_text())
    assert metrics["rmse"] < metrics["baseline_mean_rmse"]
    assert metrics["rmse"] < metrics["baseline_linear_rmse"]
    losses = metrics["history"]["loss"]
    assert losses[-1] < losses[0] * 0.8
    assert (taxi_run / "model" / "logs").is_dir() and list((taxi_run / "model" / "checkpoints").glob("epoch-*"))


def test_output_layers_start_at_the_label_mean_or_the_class_log_shares():
    regression = [tf.constant([1.0, 2.0]), tf.constant([3.0, 6.0])]
    np.testing.assert_allclose(label_mean(regression), [3.0])
    classes = [tf.constant([0, 0, 2], tf.int64), tf.constant([-1], tf.int64)]   # -1: no class, skipped
    counts = class_counts(classes, 3)
    assert counts.tolist() == [2, 0, 1]
    # counts [2, 0, 1] of 3 rows, add-one smoothed: [3, 1, 2] / 6
    np.testing.assert_allclose(class_log_shares(counts), np.log([0.5, 1 / 6, 1 / 3]), rtol=1e-6)


def test_a_regression_starts_at_its_training_labels_mean(taxi_run, tmp_path):
    trainer = Trainer(RunDir(str(taxi_run)), job_dir=str(tmp_path))
    net, _ = trainer.build()
    labels = np.concatenate([label.numpy() for _, label in trainer.dataset("train")])
    assert labels.mean() > 5                 # fares: far from 0, where the output layer would start
    np.testing.assert_allclose(net.get_layer("output").bias.numpy(), [labels.mean()], rtol=1e-5)


def test_a_classification_starts_at_its_class_shares_and_reports_the_majority_class(tmp_path):
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          features={"day_hour": {"type": "cross", "columns": ["trip_start_day", "trip_start_hour"],
                                                 "hash_buckets": 168},
                                    "fare": {"type": "numeric", "normalize": "zscore"}},
                          model={"label": "payment_type", "task": "classification", "epochs": 2,
                                 "embeddings": {"day_hour": 2}},
                          entities=[{"name": "day_hour", "key": "day_hour"}])
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "c") == 0
    run = RunDir(str(tmp_path / "runs" / "c"))
    trainer = Trainer(run, job_dir=str(tmp_path / "job"))
    net, counts = trainer.build()
    train = np.concatenate([y.numpy() for y in trainer.labels("train")])
    assert counts.tolist() == np.bincount(train, minlength=len(counts)).tolist()
    np.testing.assert_allclose(net.get_layer("logits").bias.numpy(),
                               np.log((counts + 1) / (counts.sum() + len(counts))), rtol=1e-5)
    evaluation = np.concatenate([y.numpy() for y in trainer.labels("eval")])
    metrics = json.loads((tmp_path / "runs" / "c" / "metrics.json").read_text())
    assert metrics["baseline_majority_accuracy"] == pytest.approx(np.mean(evaluation == np.argmax(counts)))
    assert metrics["eval_examples"] == len(evaluation) and 0 < metrics["accuracy"] <= 1
    # A payment type only the eval split has (id -1) trains and evaluates: a miss, counted.
    assert metrics["eval_unknown_class_rows"] == np.sum(evaluation < 0) > 0
    assert np.isfinite(metrics["log_loss"]) and np.isfinite(metrics["history"]["val_loss"]).all()


def raw_rows(count: int) -> dict[str, tf.Tensor]:
    frame = pd.read_csv(TAXI_SAMPLE, dtype={"trip_start_day": str, "trip_start_hour": str}).head(count)
    return {
        "trip_start_day": tf.constant(frame.trip_start_day.tolist()),
        "trip_start_hour": tf.constant(frame.trip_start_hour.tolist()),
        "payment_type": tf.constant(frame.payment_type.tolist()),
        "company": tf.constant(frame.company.fillna("").tolist()),
        "pickup_community_area": tf.constant(frame.pickup_community_area.fillna(-1).astype(np.int64).tolist(), tf.int64),
        "trip_miles": tf.constant(frame.trip_miles.astype(np.float32).tolist()),
        "trip_seconds": tf.constant(frame.trip_seconds.astype(np.float32).tolist()),
    }


@pytest.fixture(scope="module")
def training_graph(taxi_run, tmp_path_factory):
    """The Keras model as trained (rebuilt and given the last checkpoint) and its tf.Transform output."""
    trainer = Trainer(RunDir(str(taxi_run)), job_dir=str(tmp_path_factory.mktemp("job")))
    net, _ = trainer.build()
    net.load_weights(tf.train.latest_checkpoint(str(taxi_run / "model" / "checkpoints"))).expect_partial()
    return net, trainer.tft_output


def test_export_is_self_contained_and_matches_training_graph(taxi_run, tmp_path, training_graph):
    net, tft_output = training_graph
    raw = raw_rows(50)
    transformed = tft_output.transform_raw_features(dict(raw), drop_unused_features=True)
    expected = net({k: transformed[k] for k in net.input_names}).numpy()
    copy = tmp_path / "run"
    shutil.copytree(taxi_run, copy)
    shutil.rmtree(copy / "transform")
    served = tf.saved_model.load(str(copy / "model" / "export")).signatures["serving_default"](**raw)
    np.testing.assert_allclose(served["prediction"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(expected)) and expected.shape == (50,)


def test_embedding_signature_maps_raw_keys_and_oov(taxi_run, training_graph):
    net, tft_output = training_graph
    model = tf.saved_model.load(str(taxi_run / "model" / "export"))
    vectors = model.signatures["embed_payment_type"](payment_type=tf.constant(["Cash", "never seen"]))["embedding"]
    assert vectors.shape == (2, 4)
    table = embedding_layers(net)["payment_type"].embeddings.numpy()
    vocabulary = [v.decode() for v in tft_output.vocabulary_by_name("payment_type")]
    np.testing.assert_allclose(vectors[0], table[vocabulary.index("Cash")], rtol=1e-6)
    np.testing.assert_allclose(vectors[1], table[len(vocabulary)], rtol=1e-6)        # the OOV row
    cross = model.signatures["embed_day_hour"](trip_start_day=tf.constant(["3", "3"]),
                                               trip_start_hour=tf.constant(["17", "17"]))["embedding"]
    assert cross.shape == (2, 2) and np.array_equal(cross[0], cross[1])


def test_trainer_task_entry_point_with_job_dir(taxi_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(taxi_run, copy, ignore=shutil.ignore_patterns("model", "metrics.json", "embeddings"))
    result = subprocess.run([sys.executable, "-m", "trainer.task", "--run-dir", str(copy), "--job-dir",
                             str(tmp_path / "job")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["rmse"] < metrics["baseline_mean_rmse"]
    assert (copy / "model" / "export" / "saved_model.pb").exists()
    assert json.loads((copy / "manifest.json").read_text())["stages"]["train"]["status"] == "succeeded"
    assert tft.TFTransformOutput(str(copy / "transform")).transformed_feature_spec()


def test_an_epoch_of_rows_sorted_by_user_is_shuffled_whole(tmp_path):
    from trainer.inputs import MAX_ROW_SHUFFLE, SHUFFLE_BUFFER, make_dataset, row_shuffle_buffer
    rows = 40_000   # stored in order, as a log sorted by user is
    with tf.io.TFRecordWriter(str(tmp_path / "train-0.tfrecord.gz"), options="GZIP") as writer:
        for row in range(rows):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row]))})).SerializeToString())
    spec = {"row": tf.io.FixedLenFeature([], tf.int64)}

    def first_batch(buffer: int) -> np.ndarray:
        dataset = make_dataset(str(tmp_path / "train-*.tfrecord.gz"), spec, 256, shuffle_seed=7, shuffle_buffer=buffer)
        return next(iter(dataset))["row"].numpy()
    assert row_shuffle_buffer(rows) == rows and row_shuffle_buffer(10 ** 9) == MAX_ROW_SHUFFLE
    assert row_shuffle_buffer(10) == SHUFFLE_BUFFER
    assert first_batch(SHUFFLE_BUFFER).max() < SHUFFLE_BUFFER + 256   # a window of the first rows only
    whole = first_batch(row_shuffle_buffer(rows))
    assert np.histogram(whole, bins=4, range=(0, rows))[0].min() > 40   # every quarter of the split
