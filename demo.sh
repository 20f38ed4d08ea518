#!/usr/bin/env bash
# The whole pipeline on the built-in synthetic dataset, each stage by its normal
# command line: generate a raw Market-1501-style tree, prepare it, train, extract
# features, evaluate, and draw one query's ranking. About 8 minutes on a 2-core CPU.
#
#   bash demo.sh          # the demo (writes demo_data/ and model/demo/)
#   bash demo.sh --tiny   # a seconds-long run on a tiny tree, as the tests do
#
# Run it from the repository root with the Python that has requirements.txt installed
# first on PATH (e.g. after: . .venv/bin/activate).
set -euo pipefail

DATA=demo_data/Market-1501-synthetic
NAME=demo
# Demo sizes: 100 training and 50 test identities, 6 cameras, 128 x 64 images
# trained at 64 x 32 from scratch (no ImageNet weights can be assumed to be at hand);
# channels-first, which is faster than channels-last on CPUs at such small images.
SYNTHETIC=(--train_ids 100 --test_ids 50)
TRAIN=(--height 64 --width 32 --epochs 8 --decay_epoch 6 --lr 0.02 --batchsize 32 --no-channels_last)
if [ "${1:-}" = "--tiny" ]; then
    DATA=demo_data/tiny
    NAME=tiny
    SYNTHETIC=(--train_ids 8 --test_ids 6 --images_per_camera 2 --height 32 --width 16)
    TRAIN=(--height 64 --width 32 --epochs 1 --lr 0.01 --batchsize 8 --num_workers 0)
fi

echo "== 1/6 synthetic raw dataset in $DATA"
python synthetic.py --out "$DATA" --seed 0 "${SYNTHETIC[@]}"

echo "== 2/6 prepare: $DATA/pytorch"
python prepare.py --download_path "$DATA"

echo "== 3/6 train model/$NAME (no ImageNet weights: --no-pretrained; a previous demo run is replaced)"
python train_new.py --name "$NAME" --data_dir "$DATA/pytorch" --no-pretrained --overwrite "${TRAIN[@]}"

echo "== 4/6 test: features into model/$NAME/pytorch_result.mat"
python test.py --name "$NAME" --test_dir "$DATA/pytorch" --multi --output "model/$NAME/pytorch_result.mat"

echo "== 5/6 evaluate"
python evaluate.py --result "model/$NAME/pytorch_result.mat"

echo "== 6/6 ranking of query 0: model/$NAME/show.png (training curves: model/$NAME/train.png)"
python demo.py --test_dir "$DATA/pytorch" --result "model/$NAME/pytorch_result.mat" --query_index 0 --output "model/$NAME/show.png"
