#!/usr/bin/env bash
# Every stored fit of chapter 6 (un-trained networks, Darestani and Heckel): `python -m mrtutor.fits NAME ...` writes
# fits/NAME.pt and fits/NAME.json. Each is skipped when its record exists, and an interrupted one resumes after its
# last fitted slice (runs/NAME/state.pt), so rerunning continues.
#
#   bash train_scripts/chapter6_fits.sh                 # torch's default device and threads
#   DEVICE=cuda bash train_scripts/chapter6_fits.sh     # on a GPU
#   THREADS=1 bash train_scripts/chapter6_fits.sh       # on a CPU: pin the threads, and keep other work off them
#
# The demo tier's settings: 128 x 128 test slices, 8 coils, fastMRI random column masks at 4x and 8x. The ConvDecoder
# is the paper's brain choice (Table 11: 5 layers, 64 channels) from an 8 x 8 input (the images are square), fitted
# for 2,000 Adam steps at the authors' lr 0.008 (on a validation slice at 4x ahead of 0.02 after 2,000 steps, and
# both all but level by 4,000). The paper fits 7-8 layers of 160-256 channels for 20,000-25,000 steps at 0.008
# (authors' code) or 0.01 (Table 10's text): a tenth of its steps and a fraction of its width, for the CPU. The
# Deep Decoder is Table 11's 10 x 64; the DIP is cut from its 12 layers x 64 channels to 10 x 32 (4 skip channels).
#
# Measured cost, one CPU thread at 128 x 128, beside two other trainings on this 2-core machine (steps per second):
# ConvDecoder 5 x 64: 5.9 (with or without maps), so about 340 s a fit; 5 x 16: about 25 (80 s); 5 x 32: 15 (130 s);
# 5 x 128: 1.45 (1,380 s); Deep Decoder 10 x 64: 9.8 (205 s); DIP 10 x 32: 11.5 (175 s). Per name, in CPU-seconds:
# cd_4x, cd_8x, cd_sm_4x 2,700 each; dd_4x 1,640; dip_4x 1,400; cd_avg_4x (2 slices x 8 runs) 5,440;
# cd_w16_4x 240, cd_w32_4x 400, cd_w128_4x 4,140; cd_ood_4x 680; cd_long_4x (8,000 steps) 1,360.
# In all about 23,600 CPU-seconds, 6.6 hours on one thread.
source "$(dirname "$0")/common.sh"
fits() {  # fits NAME OPTIONS...
  [ -f "fits/$1.json" ] && return
  "$python" -m mrtutor.fits "$@" --quiet $device
}

fits cd_4x --net convdecoder --acceleration 4 --slices 8 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_8x --net convdecoder --acceleration 8 --slices 8 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
# ConvDecoder-SM through maps estimated by ESPIRiT from each slice's measurements (the paper's Step 1-B; about
# 220 s a slice on one quiet CPU thread), and through the simulation's own maps (an oracle) for comparison.
fits cd_sm_espirit_4x --net convdecoder --maps --espirit --acceleration 4 --slices 8 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
# The same with ESPIRiT's crop at 0.8 instead of sigpy's 0.95, which cuts part of the head on two of the eight slices.
fits cd_sm_espirit_crop08_4x --net convdecoder --maps --espirit --espirit-crop 0.8 --acceleration 4 --slices 8 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_sm_4x --net convdecoder --maps --acceleration 4 --slices 8 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
fits dd_4x --net deepdecoder --acceleration 4 --slices 8 --layers 10 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
fits dip_4x --net dip --acceleration 4 --slices 8 --layers 10 --channels 32 --skip-channels 4 --lr 0.008 --iterations 2000
fits cd_avg_4x --net convdecoder --acceleration 4 --slices 2 --runs 8 --seed 100 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_w16_4x --net convdecoder --acceleration 4 --slices 3 --layers 5 --channels 16 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_w32_4x --net convdecoder --acceleration 4 --slices 3 --layers 5 --channels 32 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_w128_4x --net convdecoder --acceleration 4 --slices 3 --layers 5 --channels 128 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_ood_4x --net convdecoder --split ood --acceleration 4 --slices 2 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 2000
fits cd_long_4x --net convdecoder --acceleration 4 --slices 1 --layers 5 --channels 64 --in-size 8 8 --lr 0.008 --iterations 8000
# The paper's size, for a GPU (about 2.3 s a step on one CPU thread, so 13 hours a slice there): 8 layers of 256
# channels for 20,000 steps at lr 0.008, on the first two test slices at 4x.
fits cd_paper_4x --net convdecoder --acceleration 4 --slices 2 --layers 8 --channels 256 --in-size 8 8 --lr 0.008 --iterations 20000
