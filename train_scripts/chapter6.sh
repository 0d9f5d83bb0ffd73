#!/usr/bin/env bash
# Every checkpoint of chapter 6 (un-trained networks, Darestani and Heckel): the trained method the paper compares
# ConvDecoder with, fastMRI's U-Net baseline (mrtutor.unet, 4 poolings, L1 loss on |A^H y| normalised by its mean
# and std) at half fastMRI's width: 16 channels, 1,939,105 parameters (7.8 MB) in place of 32 channels, 7,756,097
# parameters (31 MB), for 360 training slices of 128 x 128 and a checkpoint that stays small. At 4x and 8x with
# fastMRI's random column masks (central 8 % and 4 % of the columns). Each is skipped when its checkpoint exists,
# and an interrupted one resumes from runs/<name>/state.pt, so rerunning continues.
#
#   bash train_scripts/chapter6.sh                      # torch's default device and threads
#   DEVICE=cuda bash train_scripts/chapter6.sh          # on a GPU
#   THREADS=2 bash train_scripts/chapter6.sh            # on a CPU: pin the threads, and keep other work off them
#
# The demo tier's settings: 128 x 128 images, 8 coils, 360 training and 60 validation slices, batches of 4 (90 steps
# an epoch), 30 epochs, bf16 convolutions. fastMRI trains with RMSprop, lr 1e-3 divided by 10 every 40 of 50 epochs,
# batch size 1; the shared loop has Adam with a cosine decay instead (the module's docstring lists the departures).
# On one CPU thread beside another training a step takes about 0.8 s in bf16 (1.4 s in fp32): about 1.2 minutes
# an epoch, so about 40 minutes a network.
source "$(dirname "$0")/common.sh"
# lr 1e-3: fastMRI's rate for this U-Net, which Adam takes as well; the cosine ends at 5e-5 in place of its step decay.
common="--channels 16 --pools 4 --dropout 0.0 --mask column_random --batch-size 4 --epochs 30 --lr 1e-3 --precision bf16 --quiet $device $threads"

train unet_4x unet --acceleration 4 $common
train unet_8x unet --acceleration 8 $common
