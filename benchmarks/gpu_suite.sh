#!/bin/bash
# Every GPU check of docs/benchmarks.md section 6 in one command, for a short lease on one CUDA GPU:
#   1. benchmarks/gpu.py: paper-scale R50 SimFormer vs MaskFormer (512 px, batch 8, bf16 AMP) step
#      time, peak memory, inference images/s and the crop / query / J sweeps;
#   2. benchmarks/cmt_step_time.py at paper scale (simformer_cmt_R50.yaml), fp32 and bf16;
#   3. the ToyScenes recipe end to end on the GPU (SimFormer+CMT, split1, seed 1, 900 iterations),
#      fp32 and bf16 AMP side by side on the one GPU, then evaluated: does AMP train as well?
# Everything goes to OUTDIR/suite.log; each training's metrics.json and log.txt are copied beside it.
#
#   bash benchmarks/gpu_suite.sh OUTDIR          # needs datasets/toyscenes (simformer data toyscenes)
#   QUICK=1 bash benchmarks/gpu_suite.sh OUTDIR  # tiny settings on the CPU: checks the script only
set -u
out=${1:?usage: bash benchmarks/gpu_suite.sh OUTDIR}
mkdir -p "$out"
log="$out/suite.log"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the benchmarks import simformer
py=${PYTHON:-python3}
quick=${QUICK:-0}

step() {  # step TIMEOUT_S TITLE COMMAND...: run one check, its output appended to $to (default the log)
  local limit=$1 title=$2 to=${to:-$log}; shift 2
  echo "=== $(date +%T) $title: $*" >> "$log"
  timeout "$limit" "$@" >> "$to" 2>&1
  local rc=$?
  echo "=== $(date +%T) $title: exit $rc" >> "$log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
} >> "$log" 2>&1

if [ "$quick" = 1 ]; then
  bench=(--quick --allow-cpu --skip-sweeps --device cpu --threads 1)
  cmt=(--quick --device cpu --threads 1 --batch 2 --size 64)
  train=(SOLVER.MAX_ITER 4 MODEL.DEVICE cpu INPUT.CROP.SIZE "[64, 64]" MODEL.MASK_FORMER.DEC_LAYERS 1)
  limits=(120 60 120)
else
  bench=()
  cmt=(--device cuda --batch 8 --size 512)
  train=(MODEL.DEVICE cuda DATALOADER.NUM_WORKERS 3)
  limits=(200 60 230)
fi

step "${limits[0]}" gpu.py $py benchmarks/gpu.py "${bench[@]}"
step "${limits[1]}" "cmt fp32" $py benchmarks/cmt_step_time.py --config configs/ade20k/simformer_cmt_R50.yaml "${cmt[@]}"
step "${limits[1]}" "cmt bf16" $py benchmarks/cmt_step_time.py --config configs/ade20k/simformer_cmt_R50.yaml "${cmt[@]}" --amp

tmp=$(mktemp -d)
for amp in False True; do
  name=toyscenes_amp_$amp
  to=$tmp/$name.out step "${limits[2]}" "$name" $py -m simformer train --no-progress --config configs/toyscenes/simformer_cmt.yaml \
    --output "$tmp/$name" WEAKSHOT.SPLIT splits/toyscenes/split1.json SEED 1 SOLVER.AMP.ENABLED $amp \
    MODEL.MASK_FORMER.DROPOUT 0.1 SOLVER.MAX_ITER 900 "${train[@]}" &  # as the committed CPU run it is compared with
done
wait
for amp in False True; do
  name=toyscenes_amp_$amp
  cp "$tmp/$name/metrics.json" "$out/${name}_metrics.json" 2>/dev/null || echo "$name: no metrics.json" >> "$log"
  cp "$tmp/$name.out" "$out/${name}_log.txt" 2>/dev/null
done
rm -rf "$tmp"
echo "=== $(date +%T) done" >> "$log"
