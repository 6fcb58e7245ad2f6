#!/usr/bin/env bash
# Start or resume the final training of the open encoder (`kikimimi pretrain --recipe open-m2d-tiny`) on the
# open corpus: one thread, `nice -n 15`, in the background; every stage is skipped when its output exists.
#
#   bash benchmarks/open_suite/train_open_models.sh              # start, or resume after a reboot / kill
#   bash benchmarks/open_suite/train_open_models.sh --foreground # the same, in this terminal
#   bash benchmarks/open_suite/train_open_models.sh status       # is it running; loss curve so far
#   bash benchmarks/open_suite/train_open_models.sh clap         # the open CLAP from the encoder run (see train_clap)
#   bash benchmarks/open_suite/train_open_models.sh captioner    # the open captioner on the packaged CLAP (train_captioner)
#   kill -- -$(cat /root/.cache/kikimimi/open-train/final/pid)   # stop it (a rerun resumes from the newest checkpoint)
#
# Stages (benchmarks/open_suite/README.md, "Open models: recipe search"):
#   1. the corpus: `kikimimi data open-corpus $CORPUS` (cached; skipped when its manifest exists);
#   2. log-mel cache: `kikimimi prep $CORPUS/corpus.csv -o $ROOT/prep-m2d-16k --preset m2d-16k --dtype float16`;
#   3. the training view: every non-music file plus music up to 10 % of the items
#      (`recipe_search.py view --music-share 0.1 --seed 0` → $ROOT/view-music10, a prep cache listing a subset);
#   4. training: a new run `kikimimi pretrain --recipe open-m2d-tiny --data $ROOT/view-music10 --out $ROOT/final
#      --run-name open-m2d-tiny`, or `--resume` of that folder when it holds a checkpoint (exact resume).
# Output: $ROOT/final/open-m2d-tiny/ (config.json, log.jsonl, checkpoints, kikimimi/ at the end) and the
# console log $ROOT/final/log.txt. Paths: KIKIMIMI_OPEN_TRAIN (default /root/.cache/kikimimi/open-train) and
# KIKIMIMI_OPEN_CORPUS (default /root/.cache/kikimimi/open-corpus/corpus-all).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${KIKIMIMI_OPEN_TRAIN:-/root/.cache/kikimimi/open-train}
CORPUS=${KIKIMIMI_OPEN_CORPUS:-/root/.cache/kikimimi/open-corpus/corpus-all}
KIKIMIMI=${KIKIMIMI:-$REPO/.venv/bin/kikimimi}
PREP=$ROOT/prep-m2d-16k
VIEW=$ROOT/view-music10
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
FINAL=$ROOT/final
RUN=$FINAL/open-m2d-tiny
LOG=$FINAL/log.txt
CLAP=$ROOT/clap
CLAP_RUN=$CLAP/open-clap-tiny
PIDFILE=$FINAL/pid
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# the pid file names a live process that is this script (not a later process given the same pid)
running() { [ -f "$PIDFILE" ] && grep -qs train_open_models "/proc/$(cat "$PIDFILE")/cmdline"; }

if [ "${1:-}" = status ]; then
  if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not running"; fi
  [ -f "$RUN/kikimimi/config.json" ] && echo "finished: $RUN/kikimimi"
  if [ -f "$RUN/log.jsonl" ]; then
    python3 - "$RUN/log.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("step   loss     lr        elapsed")
shown = rows[:: max(1, len(rows) // 20)]
for r in shown + ([rows[-1]] if rows and shown[-1] is not rows[-1] else []):
    print(f"{r['step']:6d} {r['loss']:.4f} {r['lr']:.2e} {r['elapsed_s'] / 60:7.1f} min")
EOF
  fi
  exit 0
fi

# The open captioner (`kikimimi train-captioner --llm tiny` on the packaged open-clap-tiny's audio encoder, frozen):
# the training view (captioner_view.py: a quota of clips per caption kind, 7,638 clips, 4.92 h), then 800 steps of
# batch 32 at lr 1e-3 on one thread (18 min on the loaded 2-core machine), checkpoints every 100 steps
# (a rerun resumes them). Ship: HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python
# benchmarks/open_suite/ship_open_captioner.py $CAPTIONER/open-captioner-tiny-v2 \
#   --out src/kikimimi/weights/open-captioner-tiny
CAPTIONER=$ROOT/captioner
VIEW2=$CAPTIONER/view2
train_captioner() {
  local run=$CAPTIONER/open-captioner-tiny-v2
  if [ -f "$run/captioner/captioner.json" ]; then echo "finished: $run/captioner" >>"$CAPTIONER/log.txt"; return; fi
  {
    echo "== $(date -u +%FT%TZ) open captioner $(uptime)"
    [ -f "$VIEW2/train_captions.csv" ] || "$PYTHON" "$REPO/benchmarks/open_suite/captioner_view.py" \
      --corpus "$CORPUS" --out "$VIEW2"
    if ls "$run"/checkpoint-*.pth >/dev/null 2>&1; then
      nice -n 10 "$KIKIMIMI" train-captioner --audio-model open-clap-tiny --captions "$VIEW2/train_captions.csv" \
        --llm tiny --out "$CAPTIONER" --run-name open-captioner-tiny-v2 --steps 800 --save-every 100 --resume \
        --no-progress
    else
      rm -rf "$run"
      nice -n 10 "$KIKIMIMI" train-captioner --audio-model open-clap-tiny --captions "$VIEW2/train_captions.csv" \
        --llm tiny --out "$CAPTIONER" --run-name open-captioner-tiny-v2 --steps 800 --batch-size 32 --lr 1e-3 \
        --save-every 100 --no-progress
    fi
    echo "== $(date -u +%FT%TZ) ended"
  } >>"$CAPTIONER/log.txt" 2>&1
}

if [ "${1:-}" = captioner ]; then
  mkdir -p "$CAPTIONER"
  setsid nohup bash "$0" --foreground-captioner </dev/null >/dev/null 2>&1 &
  echo "started the open captioner; log: $CAPTIONER/log.txt"
  exit 0
fi
if [ "${1:-}" = --foreground-captioner ]; then
  train_captioner
  exit 0
fi

mkdir -p "$FINAL"
if running; then
  echo "already running (pid $(cat "$PIDFILE")); log: $LOG"
  exit 0
fi
if [ -f "$RUN/kikimimi/config.json" ]; then
  echo "finished: $RUN/kikimimi"
  exit 0
fi

train() {
  {
    echo "== $(date -u +%FT%TZ) $(uptime)"
    if [ ! -f "$CORPUS/manifest.jsonl" ]; then
      nice -n 15 "$KIKIMIMI" data open-corpus "$CORPUS"
    fi
    if [ ! -f "$PREP/manifest.csv" ]; then  # prep skips files it has converted already
      nice -n 15 "$KIKIMIMI" prep "$CORPUS/corpus.csv" -o "$PREP" --preset m2d-16k --dtype float16 --workers 1 --quiet
    fi
    if [ ! -f "$VIEW/manifest.csv" ]; then
      "$PYTHON" "$REPO/benchmarks/open_suite/recipe_search.py" view --cache "$PREP" \
        --manifest "$CORPUS/manifest.jsonl" --music-share 0.1 --seed 0 --out "$VIEW"
    fi
    if ls "$RUN"/checkpoint-*.pth >/dev/null 2>&1; then
      echo "resuming $RUN"
      nice -n 15 "$KIKIMIMI" pretrain --resume "$RUN" --no-progress
    else
      rm -rf "$RUN"  # killed before its first checkpoint: start again
      nice -n 15 "$KIKIMIMI" pretrain --recipe open-m2d-tiny --data "$VIEW" --out "$FINAL" \
        --run-name open-m2d-tiny --no-progress
    fi
    echo "== $(date -u +%FT%TZ) ended"
  } >>"$LOG" 2>&1
}

# The open CLAP (`--recipe open-clap-tiny`): M2D-CLAP further pre-training from one checkpoint of the encoder run
# (OPEN_ENCODER_STEP, default: its newest), with that run's normalisation statistics; the caption embeddings of
# the corpus's captions.csv are computed once (minilm) into $CLAP/caption-embeddings-minilm.safetensors.
train_clap() {
  local step=${OPEN_ENCODER_STEP:-$(ls "$RUN"/checkpoint-*.pth | sed 's/.*checkpoint-\([0-9]*\).pth/\1/' | sort -n | tail -1)}
  local init=$RUN/checkpoint-$step.pth stats
  stats=$("$PYTHON" -c "import json,sys; print(*json.load(open(sys.argv[1]))['norm_stats'])" "$RUN/config.json")
  local captions=$CLAP/caption-embeddings-minilm.safetensors
  [ -f "$captions" ] || captions=$CORPUS/captions.csv
  {
    echo "== $(date -u +%FT%TZ) open CLAP from $init $(uptime)"
    if ls "$CLAP_RUN"/checkpoint-*.pth >/dev/null 2>&1; then
      nice -n 15 "$KIKIMIMI" pretrain --resume "$CLAP_RUN" --no-progress
    else
      rm -rf "$CLAP_RUN"
      nice -n 15 "$KIKIMIMI" pretrain --recipe open-clap-tiny --init-from "$init" --norm-stats $stats \
        --data "$VIEW" --captions "$captions" --out "$CLAP" --run-name open-clap-tiny --no-progress
    fi
    echo "== $(date -u +%FT%TZ) ended"
  } >>"$CLAP/log.txt" 2>&1
}

if [ "${1:-}" = clap ]; then
  mkdir -p "$CLAP"
  setsid nohup bash "$0" --foreground-clap </dev/null >/dev/null 2>&1 &
  echo "started the open CLAP; log: $CLAP/log.txt"
  exit 0
fi
if [ "${1:-}" = --foreground-clap ]; then
  train_clap
  exit 0
fi

if [ "${1:-}" = --foreground ]; then
  echo $$ >"$PIDFILE"
  train
else  # detached: its own session (stop it with `kill -- -$(cat $PIDFILE)`), survives the terminal
  setsid nohup bash "$0" --foreground </dev/null >/dev/null 2>&1 &
  sleep 2
  echo "started (pid $(cat "$PIDFILE")); log: $LOG; curve: bash $0 status; stop: kill -- -\$(cat $PIDFILE)"
fi
