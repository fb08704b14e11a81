#!/usr/bin/env bash
# Makes a shipped model and everything beside it with the project's own tools, in order:
# train it, evaluate it on the test split, measure its profiles (ET-profile and exit
# softmaxes), train both CS-Predictors, and search the class-specific EEs of every class.
# Each step's output is logged under docs/ (make-NAME.log); the README's tables come from
# these logs.
#   scripts/make_model.sh ARCH EPOCHS [--from STEP]
# ARCH is configs/models/NAME.json; the files are models/NAME.safetensors,
# models/NAME.profile/ and models/NAME.ee/. STEP (train, eval, profile, predictors, ee)
# starts later, on the files the earlier steps made. EINET_TRAIN_FLAGS adds flags to the
# train step (e.g. "--shift 2").
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/make_model.sh ARCH EPOCHS [--from train|eval|profile|predictors|ee]" >&2; exit 2; }
[ $# -ge 2 ] || usage
arch=$1
epochs=$2
from=${4:-train}
[ $# -le 2 ] || [ "${3:-}" = --from ] || usage
[ -f "$arch" ] || { echo "make_model: $arch: no such architecture file" >&2; exit 2; }
case $from in train|eval|profile|predictors|ee) ;; *) usage ;; esac

bin=${EINET_BIN:-build/bin}
name=$(basename "$arch" .json)
model=models/$name.safetensors
log=docs/make-$name.log
steps=(train eval profile predictors ee)

# Runs step $1 when it is at or after --from.
wanted() {
    local s on=0
    for s in "${steps[@]}"; do
        [ "$s" = "$from" ] && on=1
        [ "$s" = "$1" ] && return $((1 - on))
    done
    return 1
}

run() {
    echo "== $(date -u +%FT%TZ) $*" | tee -a "$log"
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$log"
    echo "== done in $((SECONDS - t0)) s" | tee -a "$log"
}

[ "$from" = train ] && : >"$log"
if wanted train; then
    # shellcheck disable=SC2086
    run "$bin/einet" train --arch "$arch" --epochs "$epochs" --threads 2 --out "$model" \
        ${EINET_TRAIN_FLAGS:-}
fi
wanted eval && run "$bin/einet" eval --model "$model"
wanted profile && run "$bin/einet" profile --model "$model"
if wanted predictors; then
    run "$bin/einet" predictor train --profiles "models/$name.profile" --kind correctness --quiet
    run "$bin/einet" predictor train --profiles "models/$name.profile" --kind confidence --quiet
fi
if wanted ee; then
    mkdir -p "models/$name.ee"
    run "$bin/einet" ee-search --all-classes --model "$model" --et "models/$name.profile/et.json" \
        --save "models/$name.ee"
fi
echo "make_model: $model and its profiles, predictors and EEs are made; log $log"
