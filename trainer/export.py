"""The exported SavedModel: raw features in, through the attached tf.Transform layer.

Signatures (every input is a 1-D tensor [batch] of a raw column, named after the column):
    serving_default         supervised: {"prediction": [batch]} or {"probabilities": [batch, classes],
                            "class_id": [batch]}; two-tower: {"score": [batch]} = dot(query, candidate);
                            skip-gram: the word (item, node) vectors, as embed_<token feature>
    query_embedding         two-tower: query tower columns -> {"embedding": [batch, dim]}
    candidate_embedding     two-tower: candidate tower columns -> {"embedding": [batch, dim]}
    embed_<feature>         every embedded feature: its raw columns -> {"embedding": [batch, feature dim]}
                            (a text column gives the mean of its tokens' vectors; one token gives that token's row;
                            an item or node id of a sequences or graph config gives its row)
The object also carries `embedding_tables`: feature name -> its table variable [rows, dim].
"""
from __future__ import annotations

from typing import Callable, Iterable

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from pipelines.core.config import Config
from pipelines.core.names import CANDIDATE_SIGNATURE, QUERY_SIGNATURE, signature_name
from trainer.layers import CategoricalEmbedding


class ExportModule(tf.Module):
    """Holds the model and the tf.Transform layer so one SavedModel tracks both (and the vocabularies)."""

    def __init__(self, model: keras.Model, tft_output: tft.TFTransformOutput):
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self.raw_spec = tft_output.raw_feature_spec()

    def input_signature(self, columns: Iterable[str]) -> list[dict[str, tf.TensorSpec]]:
        return [{c: tf.TensorSpec([None], self.raw_spec[c].dtype, name=c) for c in columns}]

    def as_raw(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor | tf.SparseTensor]:
        """Signature inputs [batch] -> the transform layer's inputs: a document column (sequences,
        graphs) becomes a one-id document per row [batch, 1] ("" gives an empty one)."""
        return {c: tf.sparse.from_dense(tf.reshape(x, [-1, 1])) if isinstance(self.raw_spec[c], tf.io.VarLenFeature)
                else x for c, x in inputs.items()}

    def function(self, columns: Iterable[str], body: Callable[[dict], dict]) -> tf.types.experimental.ConcreteFunction:
        """A concrete function raw columns -> outputs, `body` receiving the transformed features."""
        columns = sorted(set(columns))

        @tf.function(input_signature=self.input_signature(columns))
        def serve(raw: dict) -> dict:
            return body(self.tft_layer(self.as_raw(raw)))
        return serve.get_concrete_function()


def export_model(path: str, config: Config, model: keras.Model, tft_output: tft.TFTransformOutput,
                 embedding_layers: dict[str, CategoricalEmbedding]) -> None:
    """Writes the SavedModel with the signatures described in the module docstring."""
    module = ExportModule(model, tft_output)
    # Tables by feature name, for warm starts of later runs (the model object itself may not restore).
    module.embedding_tables = {name: layer.embeddings for name, layer in embedding_layers.items()}
    features = config.features
    signatures = {}
    for name, layer in embedding_layers.items():
        if name not in features:
            continue  # a model-internal table (the two-tower history) has no raw key
        signatures[signature_name(name)] = module.function(
            features[name].raw_columns, lambda t, n=name, l=layer: {"embedding": l(t[n])})
    if config.model.kind == "two_tower":
        towers = {"query": (model.query, QUERY_SIGNATURE), "candidate": (model.candidate, CANDIDATE_SIGNATURE)}
        for tower_name, (tower, signature) in towers.items():
            columns = [c for f in getattr(config.model, tower_name) for c in features[f].raw_columns]
            signatures[signature] = module.function(columns, lambda t, tw=tower: {"embedding": tw(t)})
        all_columns = [c for f in config.model.query + config.model.candidate for c in features[f].raw_columns]
        signatures["serving_default"] = module.function(
            all_columns, lambda t: {"score": tf.reduce_sum(model.query(t) * model.candidate(t), axis=-1)})
    elif config.model.kind == "skipgram":
        signatures["serving_default"] = signatures[signature_name(config.token_feature)]
    else:
        all_columns = [c for f in features.values() for c in f.raw_columns]
        signatures["serving_default"] = module.function(
            all_columns, lambda t: _predict(model, t, config.model.task == "classification", config.model.label_transform))
    tf.saved_model.save(module, path, signatures=signatures)


def _predict(model: keras.Model, transformed: dict, classification: bool, label_transform: str) -> dict:
    output = model({n: transformed[n] for n in model.input_names})
    if classification:
        return {"probabilities": tf.nn.softmax(output), "class_id": tf.argmax(output, axis=-1)}
    return {"prediction": tf.math.expm1(output) if label_transform == "log" else output}
