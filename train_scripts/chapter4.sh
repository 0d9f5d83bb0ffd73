#!/usr/bin/env bash
# Every checkpoint of chapter 4 (Neural PGD), in the order the chapter needs them: Table 1, the super-resolution
# networks, the evidence for the skip, the Fig. 2 grid (copies x residual blocks) with the authors' hard data
# consistency halfway (the grid's cheapest points test the paper's claims first). Each is skipped when its
# checkpoint exists, and an interrupted one resumes from runs/<name>/state.pt, so rerunning continues.
#
#   bash train_scripts/chapter4.sh                      # torch's default device and threads
#   DEVICE=cuda bash train_scripts/chapter4.sh          # on a GPU the whole list takes minutes per network
#   THREADS=2 bash train_scripts/chapter4.sh            # on a CPU: pin the threads, and keep other work off them
#
# The demo tier's settings: 64 feature maps (the paper has 128), single coil, 5x radial-view-ordered masks.
source "$(dirname "$0")/common.sh"
mri="--features 64 --single-coil --mask radial_view_ordering --acceleration 5 --precision bf16 --quiet $device $threads"
sr="--batch-size 16 --quiet $device $threads"

train npgd_t10_rb1 npgd --iterations 10 --blocks 1 --epochs 30 --residual $mri
train resnet_rb10 npgd --iterations 1 --blocks 10 --epochs 30 --residual $mri
train npgd_t5_rb2 npgd --iterations 5 --blocks 2 --epochs 30 --residual $mri
train npgd_sr_k8 npgd_sr --kernel-size 8 --epochs 15 --lr 3e-4 $sr
train npgd_sr_k32 npgd_sr --kernel-size 32 --epochs 15 --lr 2e-5 $sr
train npgd_t2_rb5 npgd --iterations 2 --blocks 5 --epochs 30 --residual $mri
train npgd_t10_rb1_plain npgd --iterations 10 --blocks 1 --epochs 10 $mri
grid() { for copies_blocks in "$@"; do
  set -- $copies_blocks
  train "npgd_t$1_rb$2" npgd --iterations "$1" --blocks "$2" --epochs 30 --residual $mri
done; }
grid "1 1" "3 1" "1 2" "3 2"
train npgd_t10_rb1_hard npgd --iterations 10 --blocks 1 --epochs 30 --residual --consistency hard $mri
grid "2 1" "5 1" "2 2" "1 5"
