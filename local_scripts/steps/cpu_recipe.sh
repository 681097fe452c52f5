# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# The CPU-sized training recipe of small images, one copy for every task that
# uses it: the MNIST demo (local_scripts/mnist/defaults.sh) and your own small
# images (local_scripts/custom/defaults.sh). The recipe was chosen on MNIST's
# dev split (docs/mnist_demo.md, "Third round"), the step counts for a
# 2-round MNIST run within 15 minutes on 2026-12-04's machine, measured
# over 3 seeds ("Fifth" and "Sixth round"). Sourced by those defaults.sh; never run.
# It sets CPU_SMALL_IMAGE_MODEL_FLAGS, the network the recipe is for, and
# these, each X="${X:-...}" overridable from the environment:
#   TEACHER_STEPS  the teacher's training steps
#   STUDENT_STEPS  each student's training steps
#   TEACHER_FLAGS  the teacher's training flags (with TEACHER_STEPS)
#   STUDENT_FLAGS  each student's training flags (with STUDENT_STEPS)
# Setting TEACHER_FLAGS or STUDENT_FLAGS replaces that whole recipe, its
# --train_steps included (TEACHER_STEPS or STUDENT_STEPS are then ignored).

# EfficientNet-B0 with width and depth scaled by 0.25 (126,822 parameters at
# 10 classes, model_params.txt; the 32x32 small-image variant, as for SVHN).
# Dropout 0.2 before the classifier and stochastic depth 0.2 are the B0
# defaults.
CPU_SMALL_IMAGE_MODEL_FLAGS="--model_name=efficientnet-b0 --width_coefficient=0.25 --depth_coefficient=0.25"
TEACHER_STEPS="${TEACHER_STEPS:-1000}"
STUDENT_STEPS="${STUDENT_STEPS:-2000}"
# Teacher: supervised on the labeled images only, with RandAugment.
TEACHER_FLAGS="${TEACHER_FLAGS:---train_batch_size=64 --train_steps=${TEACHER_STEPS} --base_learning_rate=0.048 --final_base_lr=0.0002 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
# Noisy student: labeled + filtered pseudo-labeled images (2 per labeled one),
# hard pseudo labels, RandAugment on the student's inputs, trained from
# scratch, 2,000 steps against the teacher's 1,000. Its learning rate decays to
# 0.01 per 256 images rather than the teacher's 0.0002: a student that starts
# from scratch on 51,000 images needs its updates at a useful rate. With
# 1,250 steps one seed's round-2 student, learning from far cleaner pseudo
# labels, did no better than round 1; with 2,000 every round of 3 seeds gained.
# The step counts are a time budget: a 2-round MNIST run took 653-715 s on
# 2 CPU cores (2026-12-04, docs/mnist_demo.md, "Sixth round"); more steps
# give more accurate models.
STUDENT_FLAGS="${STUDENT_FLAGS:---train_batch_size=32 --unlabel_ratio=2 --teacher_softmax_temp=-1 --train_steps=${STUDENT_STEPS} --base_learning_rate=0.048 --final_base_lr=0.01 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
