#!/bin/bash
# The GPU runs of benchmarks/README.md (not run yet: no GPU machine was available).
# Run from the repository root on a CUDA machine; results land in benchmarks/results/.
set -e
R=benchmarks/results
# Throughput with the cumulative variants fp32 -> +cudnn_benchmark -> +channels_last
# -> +bf16 autocast -> +torch.compile, with MFU against the GPU's peak.
python3 benchmarks/speed.py --device cuda --sizes 256,512 --widths paper --batch 8 \
    --warmup 3 --iters 20 --train-iters 20 --name speed_cuda > $R/log_speed_cuda.txt
python3 benchmarks/monai_compare.py --device cuda --sizes 256,512 --batch 8 --warmup 3 \
    --iters 20 --train-iters 20 --out $R/cuda > $R/log_monai_cuda.txt
# Time to first prediction with the paper preset.
python3 benchmarks/first_prediction.py --device cuda --preset paper --seeds 0,1,2 \
    --out $R/cuda > $R/log_first_prediction_cuda.txt
# The full ACDC grid: paper preset, the whole pool, 60 epochs.
python3 benchmarks/accuracy_stacks.py --device cuda --preset paper --patients 70 --epochs 60 \
    --seeds 0,1,2 --regimes few,all --out $R/cuda > $R/log_acdc_cuda.txt
python3 benchmarks/report.py --out $R/cuda
# Cohort prediction, paper preset: workers are dealt round-robin over the GPUs, so beyond
# the number of GPUs several workers share one.
python3 benchmarks/cohort_scaling.py --device cuda --preset paper --workers 1,2,4,8 \
    --out $R/cuda > $R/log_cohort_scaling_cuda.txt
