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

# The other systems (UNet#, CHS-Net, MSDS-UNet), one benchmark at a time, one thread, niced.
nice -n 10 python3 benchmarks/accuracy_stacks.py --patients 10 --epochs 6 --seeds 0,1,2 \
    --regimes few --models unetsharp,raiunet --threads 1 > $R/log_acdc_others.txt
nice -n 10 python3 benchmarks/speed.py --models \
    unetsharp,unetsharp_fast4,unetsharp_fast3,unetsharp_fast2,unetsharp_fast1,raiunet,msdsunet \
    --sizes 256 --widths paper --depth 16 --threads 1 --warmup 1 --iters 1 --train-iters 1 \
    > $R/log_speed_others.txt
nice -n 10 python3 benchmarks/accuracy_stacks.py --patients 10 --epochs 6 --seeds 0,1,2 \
    --regimes few --models msdsunet --threads 1 > $R/log_acdc_msdsunet.txt
nice -n 10 python3 benchmarks/accuracy_covid.py --models cascade:raiunet+raiunet,raiunet \
    --seeds 0,1,2 --epochs 8 --threads 1 > $R/log_covid_others.txt
# UNet# again (same seeds, same weights), scored in accurate mode and pruned to each head.
nice -n 10 python3 benchmarks/accuracy_stacks.py --patients 10 --epochs 6 --seeds 0,1,2 \
    --regimes few --models unetsharp --unetsharp-pruned --name accuracy_acdc_unetsharp_pruned \
    --threads 1 > $R/log_acdc_unetsharp_pruned.txt
# The reference rows timed again in the same conditions as the rows above.
nice -n 10 python3 benchmarks/speed.py --models unetpp,numsnet,drsegunet --sizes 256 \
    --widths paper --threads 1 --warmup 1 --iters 1 --train-iters 1 --name speed_retime \
    > $R/log_speed_retime.txt
# MSDS-UNet with 5x the epochs, seed 0: under-trained or not learning?
nice -n 10 python3 benchmarks/accuracy_stacks.py --patients 10 --epochs 30 --seeds 0 \
    --regimes few --models msdsunet --name accuracy_acdc_msdsunet_30ep --threads 1 \
    > $R/log_acdc_msdsunet_30ep.txt

# Cohort prediction: 1 and 2 worker processes over the 20 ACDC validation stacks.
python3 benchmarks/cohort_scaling.py --workers 1,2 --device cpu > $R/log_cohort_scaling.txt
python3 benchmarks/cohort_scaling.py --workers 1,2 --device cpu --preset paper \
    >> $R/log_cohort_scaling.txt

python3 benchmarks/report.py --out $R
