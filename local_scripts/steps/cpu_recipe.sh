# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# The CPU-sized training recipe of small images, one copy for every task that
# uses it: the MNIST demo (local_scripts/mnist/defaults.sh) and your own small
# images (local_scripts/custom/defaults.sh). Sourced by those defaults.sh;
# never run. It sets CPU_SMALL_IMAGE_MODEL_FLAGS, the network the recipe is
# for, and these, each X="${X:-...}" overridable from the environment:
#   TEACHER_EPOCHS  the teacher's length, in epochs of the labeled images
#   STUDENT_EPOCHS  each student's length, in epochs of its pseudo-labeled images
#   TEACHER_FLAGS   the teacher's training flags (with TEACHER_EPOCHS)
#   STUDENT_FLAGS   each student's training flags (with STUDENT_EPOCHS)
# Setting TEACHER_FLAGS or STUDENT_FLAGS replaces that whole recipe, its
# --train_epochs included (TEACHER_EPOCHS or STUDENT_EPOCHS are then ignored).
# Lengths are in epochs (main.py --train_epochs), not steps, so that 500 or
# 50,000 labeled images get a trained teacher from the same defaults.

# EfficientNet-B0 with width and depth scaled by 0.25 (126,822 parameters at
# 10 classes, model_params.txt; the 32x32 small-image variant, as for SVHN).
# Dropout 0.2 before the classifier and stochastic depth 0.2 are the B0
# defaults.
CPU_SMALL_IMAGE_MODEL_FLAGS="--model_name=efficientnet-b0 --width_coefficient=0.25 --depth_coefficient=0.25"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-64}"
STUDENT_EPOCHS="${STUDENT_EPOCHS:-2.5}"
# Teacher: supervised on the labeled images only, with RandAugment.
TEACHER_FLAGS="${TEACHER_FLAGS:---train_batch_size=64 --train_epochs=${TEACHER_EPOCHS} --base_learning_rate=0.048 --final_base_lr=0.0002 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
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
STUDENT_FLAGS="${STUDENT_FLAGS:---train_batch_size=32 --unlabel_ratio=2 --teacher_softmax_temp=-1 --train_epochs=${STUDENT_EPOCHS} --base_learning_rate=0.048 --final_base_lr=0.01 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
