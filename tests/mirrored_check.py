"""Run as a script: compares one training step on 1 device and on 2 logical CPUs.

Logical devices must be configured before TensorFlow initializes, hence a
separate process. Prints one JSON line. An argument `float16` trains in
mixed float16 with loss scaling, and then also runs an overflowing step
(a huge loss scale) on the 2 CPUs.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import train_lib  # noqa: E402

PRECISION = sys.argv[1] if len(sys.argv) > 1 else "float32"


def make_state(strategy):
    config = train_lib.TrainConfig(
        mixed_precision=PRECISION,
        model_dir="/tmp/unused",
        label_data_dir="/tmp/unused",
        task_name="mnist",
        num_label_classes=10,
        input_image_size=32,
        small_image_model=True,
        override_params={
            "width_coefficient": 0.1,
            "depth_coefficient": 0.1,
            "dropout_rate": 0.0,
            "stochastic_depth_rate": 0.0,
        },
        train_batch_size=8,
        num_train_images=80,
        base_learning_rate=0.5,
        # Batch norm over all replicas, so that 2 replicas equal one device.
        num_shards_per_group=-2,
    )
    return config, train_lib.TrainState(config, strategy)


def main():
    train_lib.set_precision(PRECISION)
    rng = np.random.default_rng(0)
    batch = {
        "images": rng.uniform(0, 255, size=(8, 32, 32, 3)).astype(np.float32),
        "labels": (np.arange(8) % 10).astype(np.int32),
    }
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config, s1 = make_state(single)
    _, s2 = make_state(mirrored)
    for a, b in zip(s2.model.weights, s1.model.weights, strict=True):
        a.assign(b.numpy())
    for a, b in zip(s2.ema_model.weights, s1.ema_model.weights, strict=True):
        a.assign(b.numpy())

    def loss_of(strategy, state):
        ds = tf.data.Dataset.from_tensors(batch)
        dist = strategy.experimental_distribute_dataset(ds)
        per_replica = strategy.run(
            lambda b: train_lib.compute_losses(config, state, b, training=True)[0],
            args=(next(iter(dist)),),
        )
        total = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        return float(total)

    loss_single = loss_of(single, s1)
    loss_mirrored = loss_of(mirrored, s2)

    def one_step(strategy, state):
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        # Warm the LR past zero so the step changes the weights.
        state.optimizer.iterations.assign(20)
        train_lib.make_train_loop(config, state)(iterator, tf.constant(1))

    start = np.concatenate([w.numpy().ravel() for w in s1.model.trainable_weights])
    one_step(single, s1)
    one_step(mirrored, s2)
    extra = {}
    if s2.loss_scale is not None:
        # float16 rounding differs between the two: compare the updates, relatively.
        update1, update2 = (
            np.concatenate([w.numpy().ravel() for w in s.model.trainable_weights]) - start
            for s in (s1, s2)
        )
        extra["update_rel_diff"] = float(
            np.linalg.norm(update2 - update1) / np.linalg.norm(update1)
        )
        extra["steps"] = [s1.step, s2.step]
        extra["scales"] = [float(s.loss_scale.scale.numpy()) for s in (s1, s2)]
        before = [w.numpy() for w in s2.model.trainable_weights + s2.ema_model.weights]
        s2.loss_scale.scale.assign(2.0**60)
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        iterator = iter(mirrored.experimental_distribute_dataset(ds))
        train_lib.make_train_loop(config, s2)(iterator, tf.constant(1))
        after = [w.numpy() for w in s2.model.trainable_weights + s2.ema_model.weights]
        extra["overflow"] = {
            "step": s2.step,
            "scale": float(s2.loss_scale.scale.numpy()),
            "unchanged": all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)),
        }
    diffs = [
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(s1.model.weights, s2.model.weights, strict=True)
    ]
    moved = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(s1.model.weights, s1.ema_model.weights, strict=True)
    )
    print(
        json.dumps(
            {
                "replicas": mirrored.num_replicas_in_sync,
                "loss_single": loss_single,
                "loss_mirrored": loss_mirrored,
                "max_weight_diff": max(diffs),
                "weights_moved": moved,
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
