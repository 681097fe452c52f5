# shellcheck shell=bash disable=SC2034  # the sourcing scripts use these
# The CPU-sized training recipe of small images, one copy for every task that
# uses it: the MNIST demo (local_scripts/mnist/defaults.sh) and your own small
# images (local_scripts/custom/defaults.sh). Sourced by those defaults.sh;
# never run. It sets CPU_SMALL_IMAGE_MODEL_FLAGS, the network the recipe is
# for, and these, each X="${X:-...}" overridable from the environment:
#   TEACHER_EPOCHS  the teacher's length, in epochs of the labeled images
#   STUDENT_STEPS   each student's training steps
#   TEACHER_FLAGS   the teacher's training flags (with TEACHER_EPOCHS)
#   STUDENT_FLAGS   each student's training flags (with STUDENT_STEPS)
# Setting TEACHER_FLAGS or STUDENT_FLAGS replaces that whole recipe, its
# length included (TEACHER_EPOCHS or STUDENT_STEPS are then ignored); to add
# or change a few flags, set EXTRA_TEACHER_FLAGS or EXTRA_STUDENT_FLAGS
# instead (docs/scripts.md).

# EfficientNet-B0 with width and depth scaled by 0.25 (126,822 parameters at
# 10 classes, model_params.txt; the 32x32 small-image variant, as for SVHN).
# Dropout 0.2 before the classifier and stochastic depth 0.2 are the B0
# defaults.
CPU_SMALL_IMAGE_MODEL_FLAGS="--model_name=efficientnet-b0 --width_coefficient=0.25 --depth_coefficient=0.25"
# The teacher's length is in epochs of the labeled images (main.py
# --train_epochs), so that 500 or 50,000 labeled images get the same number
# of passes: 64 epochs are 1,000 steps of 64 on the demo's 1,000 images.
TEACHER_EPOCHS="${TEACHER_EPOCHS:-64}"
# The students' length is still a step count: 2,000 steps of 32 labeled + 64
# pseudo-labeled images (about 2.6 epochs of the demo's 50,000 pseudo labels).
STUDENT_STEPS="${STUDENT_STEPS:-2000}"
# Teacher: supervised on the labeled images only, with RandAugment.
TEACHER_FLAGS="${TEACHER_FLAGS:---train_batch_size=64 --train_epochs=${TEACHER_EPOCHS} --base_learning_rate=0.048 --final_base_lr=0.0002 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
# Noisy student: labeled + filtered pseudo-labeled images (2 per labeled one),
# hard pseudo labels (after the confidence filter the teacher's probabilities
# add mostly its uncertainty), RandAugment on the student's inputs, trained
# from scratch (the paper's student; it does not inherit an underfit
# teacher's weights). Its learning rate decays only to 0.01 per 256 images:
# a student that starts from scratch on 50,000 new images needs its late
# updates at a useful rate, where the teacher's 240-fold decay left them
# too small to move.
STUDENT_FLAGS="${STUDENT_FLAGS:---train_batch_size=32 --unlabel_ratio=2 --teacher_softmax_temp=-1 --train_steps=${STUDENT_STEPS} --base_learning_rate=0.048 --final_base_lr=0.01 --weight_decay=1e-4 --augment_name=v1 --randaug_mag=10}"
