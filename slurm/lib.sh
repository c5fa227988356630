# lib.sh: role layouts and step checks for the s2d sbatch scripts (bash; source it). tools/sweep reads layouts the same way.
# A layout names the worker groups as "<G>g<S>s<L>l" (generators, scorers, learners), e.g. 2g1s2l; rank 0 is
# the scheduler, so a layout needs G+S+L+1 ranks. "single" is the one-process run (every role local).

# s2d_layout_parse LAYOUT: prints "G S L" (or "0 0 0" for single); fails with a message on a bad layout.
s2d_layout_parse() {
  local l=$1
  if [ "$l" = single ] || [ "$l" = 1 ]; then echo "0 0 0"; return 0; fi
  if [[ $l =~ ^([0-9]+)g([0-9]+)s([0-9]+)l$ ]] && [ "${BASH_REMATCH[1]}" -ge 1 ] &&
     [ "${BASH_REMATCH[2]}" -ge 1 ] && [ "${BASH_REMATCH[3]}" -ge 1 ]; then
    echo "$((10#${BASH_REMATCH[1]})) $((10#${BASH_REMATCH[2]})) $((10#${BASH_REMATCH[3]}))"
    return 0
  fi
  echo "layout '$l': expected <G>g<S>s<L>l with G, S, L >= 1 (e.g. 1g1s1l, 2g1s2l) or 'single'" >&2
  return 1
}

# s2d_layout_ranks LAYOUT: the number of MPI ranks the layout needs (1 for single).
s2d_layout_ranks() {
  local g s l; read -r g s l < <(s2d_layout_parse "$1") || return 1
  [ -n "$g" ] || return 1
  echo $((g + s + l + 1))
}

# s2d_layout_for_ranks N: a default layout for N ranks. One scorer per four workers (scoring is one forward
# pass, cheaper than sampling or training); generators and learners split the rest, generators get the odd
# one because sampling is the slow stage. N=1 is single; N=2..3 cannot hold three groups plus the scheduler.
s2d_layout_for_ranks() {
  local n=$1
  if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ]; then echo "ranks '$n': expected a positive integer" >&2; return 1; fi
  if [ "$n" -eq 1 ]; then echo single; return 0; fi
  if [ "$n" -lt 4 ]; then
    echo "$n ranks: a multi-rank layout needs at least 4 (scheduler + generator + scorer + learner); use 1 or >= 4" >&2
    return 1
  fi
  local w=$((n - 1)) s l g
  s=$((w / 4)); [ $s -lt 1 ] && s=1
  l=$(((w - s) / 2))
  g=$((w - s - l))
  echo "${g}g${s}s${l}l"
}

# s2d_layout_args LAYOUT [RANKS]: the `s2d train` arguments for LAYOUT, one per line (for mapfile). With
# RANKS, checks that the layout fits the rank count exactly.
s2d_layout_args() {
  local layout=$1 ranks=${2:-} g s l need
  read -r g s l < <(s2d_layout_parse "$layout") || return 1
  [ -n "$g" ] || return 1
  need=$(s2d_layout_ranks "$layout") || return 1
  if [ -n "$ranks" ] && [ "$ranks" != "$need" ]; then
    echo "layout $layout needs $need ranks (G+S+L+1), the job has $ranks" >&2
    return 1
  fi
  [ "$g" -eq 0 ] && return 0   # single process: the config's roles (if any) are not overridden
  printf -- '--set\nroles.generators=%s\n--set\nroles.scorers=%s\n--set\nroles.learners=%s\n' "$g" "$s" "$l"
}

# s2d_metrics_size OUT: bytes in OUT/metrics.jsonl now (0 when absent); pair with s2d_check_step.
s2d_metrics_size() { stat -c %s "$1/metrics.jsonl" 2>/dev/null || echo 0; }

# s2d_check_step RC OUT SIZE_BEFORE ARGS...: srun's exit status RC is not enough: Slurm 22.05's srun exits 0
# when a step fails to launch (e.g. the pmix plugin cannot set up). A run that succeeds must have added to
# OUT/metrics.jsonl (ARGS with --dry-run write nothing and are taken at their word).
s2d_check_step() {
  local rc=$1 out=$2 before=$3; shift 3
  if [ "$rc" -ne 0 ]; then
    echo "s2d job: the s2d step failed (srun exit status $rc); the rank that failed says why above" >&2
    return "$rc"
  fi
  case " $* " in *" --dry-run "*) return 0 ;; esac
  if [ "$(s2d_metrics_size "$out")" -le "$before" ]; then
    echo "s2d job: srun exited 0 but wrote nothing to $out/metrics.jsonl: the step did not run" \
         "(a launch failure: see the srun errors above and slurmd's log on the node)" >&2
    return 1
  fi
  return 0
}
