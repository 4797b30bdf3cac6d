#!/bin/bash
# The CPU benchmark runs of benchmarks/README.md, in the order they were run (two streams of
# one thread each, niced, on a shared 2-core machine). Run from the repository root.
set -e
R=benchmarks/results

# Stream 1: the ACDC few-shot grid. (A first attempt with --patients 20 was stopped after
# four models of seed 0, for time; its records are in acdc_pool20_seed0.jsonl.)
nice -n 10 python3 benchmarks/accuracy_stacks.py --patients 10 --epochs 6 --seeds 0,1,2 \
    --regimes few --threads 1 > $R/log_acdc_few.txt

# Stream 2: speed, MONAI, time to first prediction, the ACDC all-slices bound,
# self-learning, COVID.
nice -n 10 python3 benchmarks/speed.py --sizes 256,512 --widths paper --threads 1 \
    --warmup 1 --iters 1 --train-iters 1 > $R/log_speed_cpu.txt
nice -n 10 python3 benchmarks/monai_compare.py --sizes 256 --threads 1 --warmup 1 --iters 1 \
    --train-iters 1 > $R/log_monai.txt
nice -n 10 python3 benchmarks/first_prediction.py --models numsnet,unetpp,drsegunet --seeds 0 \
    --threads 1 > $R/log_first_prediction.txt
nice -n 10 python3 benchmarks/accuracy_stacks.py --patients 10 --epochs 1 --seeds 0 \
    --regimes all --models unetpp,drsegunet --threads 1 > $R/log_acdc_all.txt
nice -n 10 python3 benchmarks/self_learning.py --stacks ct --seeds 0,1,2 --epochs 8 \
    --threads 1 > $R/log_self_learning_ct.txt
nice -n 10 python3 benchmarks/accuracy_covid.py --models unetpp,drsegunet --seeds 0,1,2 \
    --epochs 8 --threads 1 > $R/log_covid.txt
nice -n 10 python3 benchmarks/self_learning.py --stacks covid --seeds 0 --epochs 8 \
    --threads 1 > $R/log_self_learning_covid.txt
nice -n 10 python3 benchmarks/self_learning.py --stacks ct --seeds 0,1,2 --epochs 8 --no-guard \
    --threads 1 > $R/log_self_learning_ct_noguard.txt
nice -n 10 python3 benchmarks/self_learning.py --stacks covid --seeds 1,2 --epochs 8 \
    --threads 1 >> $R/log_self_learning_covid.txt
nice -n 10 python3 benchmarks/self_learning.py --stacks covid --seeds 0 --epochs 8 --no-guard \
    --threads 1 > $R/log_self_learning_covid_noguard.txt
# Afterwards, two at a time on a quieter machine: more seeds for the first prediction.
nice -n 10 python3 benchmarks/first_prediction.py --models drsegunet,unetpp,numsnet --seeds 1,2 \
    --threads 1 > $R/log_first_prediction_seeds12.txt
nice -n 10 python3 benchmarks/first_prediction.py --models unet,wunet,nums_all --seeds 0 \
    --threads 1 > $R/log_first_prediction_others.txt

python3 benchmarks/report.py --out $R
