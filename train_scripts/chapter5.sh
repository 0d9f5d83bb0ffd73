#!/usr/bin/env bash
# Every checkpoint of chapter 5 (learned stepsizes for scaled gradient projection, Lee and Chun), Step-learned
# SGP for inpainting and partial Fourier (the paper's Tables 1-3), the non-iterative U-Nets they are compared
# with, Step-learned SGP for chapter 1's multi-coil l1-wavelet MRI problem, for deblurring and for sparse-view CT
# (144 views), then Diag-learned SGP for inpainting, partial Fourier, deblurring and sparse-view CT. The U-Nets are trained twice, with and
# without the input-to-output skip, the suspect in the paper's U-Net failing at sampling rates it was not trained
# on. The paper's problems are trained at 50 % (noiseless) with lam = 0.1 / 255 for images in [0, 1], the MRI
# problem at 6x with chapter 1's weight, all against FISTA-b's converged solutions (computed once and cached under
# the data root on first use). Each is skipped when its checkpoint exists, and an interrupted one resumes from
# runs/<name>/state.pt, so rerunning continues.
#
#   bash train_scripts/chapter5.sh                      # torch's default device and threads
#   DEVICE=cuda bash train_scripts/chapter5.sh          # on a GPU
#   THREADS=2 bash train_scripts/chapter5.sh            # on a CPU: pin the threads, and keep other work off them
#
# The demo tier's settings: 128 x 128 images, 240 training and 24 validation images, K = 10 first iterations in
# the greedy loss (the paper reports its networks after 20 iterations), U-Net widths 16-32-64, batches of 8, Adam
# with a cosine decay from lr 1e-2 over 10 epochs: the first step of inpainting lies near 1000 t_L, three decades
# from the t_L an untrained network answers. The two inpainting SGP networks were started with 20 epochs; the
# Step-learned one reached 22.52 dB validation PSNR after 5 and ended at 22.66 after 20, so the others have 10. On one CPU thread
# beside another training an epoch of the inpainting networks takes 5 to 6 minutes, so a network about an hour;
# the FISTA-b references of a training split take about 6 (inpainting) to 12 minutes (Fourier) on one thread.
source "$(dirname "$0")/common.sh"
common="--iterations 10 --features 16 --batch-size 8 --quiet $device $threads"

train sgp_step_inpainting sgp --kind step --lr 1e-2 --problem inpainting --epochs 20 $common
train sgp_step_fourier sgp --kind step --lr 1e-2 --problem fourier --epochs 10 $common
for problem in inpainting fourier; do  # the U-Nets: one pass per image, no iterations; then without their skip
  unet="sgp_unet --problem $problem --features 16 --batch-size 8 --epochs 30 --lr 1e-3 --quiet $device $threads"
  train "sgp_unet_$problem" $unet
  train "sgp_unet_${problem}_plain" $unet --no-skip
done
for problem in inpainting fourier; do  # the next suspect, width: 64-128-256 features (1.86 M weights, not 0.12 M)
  train "sgp_unet_${problem}_f64" sgp_unet --problem $problem --features 64 --batch-size 8 --epochs 30 --lr 1e-3 \
    --quiet $device $threads
done
train sgp_step_mri sgp_mri --kind step --lr 1e-2 --epochs 10 $common  # chapter 1's problem, beyond the paper
train sgp_step_deblurring sgp --kind step --lr 1e-2 --problem deblurring --epochs 10 $common
train sgp_step_ct sgp --kind step --lr 1e-2 --problem ct --views 144 --epochs 10 $common
train sgp_diag_inpainting sgp --kind diag --lr 1e-2 --problem inpainting --epochs 20 $common
train sgp_diag_fourier sgp --kind diag --lr 1e-2 --problem fourier --epochs 10 $common
train sgp_diag_deblurring sgp --kind diag --lr 1e-2 --problem deblurring --epochs 10 $common
train sgp_diag_ct sgp --kind diag --lr 1e-2 --problem ct --views 144 --epochs 10 $common
