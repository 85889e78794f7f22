"""This process's place in a training cluster, and the distribution strategy that follows from it.

`TF_CONFIG` (set by Vertex AI and by the multi-worker tests) names the cluster: one process with
no `TF_CONFIG` trains alone; several workers train with MultiWorkerMirroredStrategy; `ps` tasks
select ParameterServerStrategy, where workers and parameter servers only serve the chief.
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in the training cluster `TF_CONFIG` describes (one chief without it)."""
    workers: int = 1
    type: str = "chief"
    index: int = 0
    has_chief: bool = False
    parameter_servers: int = 0

    @property
    def strategy(self) -> str:
        """`parameter_server` when the cluster has `ps` tasks, `multi_worker_mirrored` with more than one
        worker, else `default` (one device)."""
        if self.parameter_servers:
            return "parameter_server"
        return "multi_worker_mirrored" if self.workers > 1 else "default"

    @property
    def is_chief(self) -> bool:
        """The chief publishes; without a `chief` task in the cluster, worker 0 is the chief."""
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def serves_only(self) -> bool:
        """Workers and parameter servers of a parameter-server cluster run no training loop."""
        return bool(self.parameter_servers) and self.type in ("worker", "ps")


def cluster_task() -> ClusterTask:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return ClusterTask(max(workers, 1), task.get("type", "chief"), int(task.get("index", 0)), "chief" in cluster,
                       len(cluster.get("ps", [])))


def serve_parameter_server_task() -> None:
    """Workers and parameter servers of a parameter-server cluster only serve the chief; never returns."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    server.join()


def choose_strategy(task: ClusterTask) -> tf.distribute.Strategy:
    """The strategy `task.strategy` names; parameter servers hold the tables, sharded across them."""
    if task.strategy == "parameter_server":
        return tf.distribute.experimental.ParameterServerStrategy(
            tf.distribute.cluster_resolver.TFConfigClusterResolver(),
            variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
                min_shard_bytes=256 << 10, max_shards=task.parameter_servers))
    if task.strategy == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shards examples, not files, across workers: a run may have fewer data files than workers."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
