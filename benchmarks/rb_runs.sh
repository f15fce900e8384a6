# The recommended command's benchmark runs (sourced by bench_recommended.sh and its lever
# scripts): demo-size datasets no recipe was chosen on, and the arguments of one run.
# DATASETS: name:seed videos:generator seed:text_meaning, space-separated.
RB_DATASETS=${DATASETS:-"shared-s11:shared:11:0 disjoint-s11:disjoint:11:0 shared-s12-text1:shared:12:1"}

# rb_args SPEC SCALE RECIPE sets DS (the dataset's name at that scale) and ARGS:
# configs/recommended.yaml on it, its artifacts under <kind>/rb-DS/RECIPE, and RECIPE's
# training: chosen (the file's search), defaults (the kit's train defaults) or fixed (the
# recipe the file fixed before: 7 epochs, batch 256, lr 3e-3, patience 3); or plain,
# benchmarks/plain_defaults.yaml (the kit's plain defaults: other members, its own stack).
rb_args() {
  local name regime seed meaning p file=configs/recommended.yaml
  IFS=: read -r name regime seed meaning <<< "$1"
  DS="$name-x$2"
  [[ $3 == plain ]] && file=benchmarks/plain_defaults.yaml
  ARGS=("$file" -q --set synth.scale="$2" --set synth.seed="$seed"
        --set synth.seed_videos="$regime" --set synth.text_meaning="$meaning"
        --set data.root="data/rb-$DS" --set folds.path="folds/rb-$DS/folds.csv")
  for p in models ensembles submissions reports runs; do
    ARGS+=(--set "paths.$p=$p/rb-$DS/$3")
  done
  case $3 in
    defaults) ARGS+=(--set tune=null) ;;
    fixed) ARGS+=(--set tune=null --set train.epochs=7 --set train.batch_size=256
                  --set train.lr=0.003 --set train.patience=3) ;;
  esac
}
