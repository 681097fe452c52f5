"""Run as a script: compares one training step on 1 device and on 2 logical CPUs.

Logical devices must be configured before TensorFlow initializes, hence a
separate process. Prints one JSON line.
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


def make_state(strategy):
    config = train_lib.TrainConfig(
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

    one_step(single, s1)
    one_step(mirrored, s2)
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
            }
        )
    )


if __name__ == "__main__":
    main()
