"""The training and inference precisions (--mixed_precision), without TensorFlow.

main.py checks its precision flags against these before it imports
TensorFlow, so that a contradiction fails at once; train_lib.py maps them to
Keras' dtype policies.
"""

# float32; bfloat16 (Keras mixed_bfloat16, for TPUs); float16 (mixed_float16
# with dynamic loss scaling, for GPUs).
PRECISIONS = ("float32", "bfloat16", "float16")


def resolve_precision(mixed_precision, use_bfloat16, use_bfloat16_given=False):
    """The precision of a run from `--mixed_precision` and the published `--use_bfloat16`.

    Args:
      mixed_precision: "float32", "bfloat16", "float16", or None (not given).
      use_bfloat16: `--use_bfloat16` (published default True).
      use_bfloat16_given: whether `--use_bfloat16` was given on the command
        line; only then can the two flags contradict each other.

    Returns:
      The precision: `mixed_precision` when given, else "bfloat16" or
      "float32" as `use_bfloat16` says, so old scripts keep their meaning.
      `--use_bfloat16=False`, which the CPU/GPU scripts always pass, only
      declines the published bfloat16 default: a `--mixed_precision` given
      with it wins.

    Raises:
      ValueError: `mixed_precision` is not a known precision, or
        `--use_bfloat16=True` was given with float32 or float16.
    """
    if mixed_precision is None:
        return "bfloat16" if use_bfloat16 else "float32"
    if mixed_precision not in PRECISIONS:
        raise ValueError(
            f"--mixed_precision={mixed_precision}: expected one of {', '.join(PRECISIONS)}."
        )
    if use_bfloat16_given and use_bfloat16 and mixed_precision != "bfloat16":
        raise ValueError(
            f"--mixed_precision={mixed_precision} contradicts --use_bfloat16=True: give only "
            "--mixed_precision (--use_bfloat16=True asks for bfloat16), or make them agree."
        )
    return mixed_precision
