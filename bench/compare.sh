#!/usr/bin/env bash
# compare.sh - back up, back up again and restore the make-dataset.sh workload with our chunk store
# and its peers (restic, borg, casync), each on a fresh repository, tools taking turns, and print one
# table (medians over --runs). Every restore is checked file by file with cmp; a mismatch aborts.
#
# Usage: bench/compare.sh DATASET WORKDIR [--tools LIST] [--runs N] [--json FILE] [--breakdown]
#                                         [--no-timed-sync]
#   DATASET     a directory made by ../shared/bench/make-dataset.sh (vm-disk-v1.raw, ...)
#   WORKDIR     where repositories, staging and restores go (put it on DATASET's file system so
#               the staging step can hard-link instead of copying); only a fresh
#               WORKDIR/compare.XXXXXX is written, and it is removed at the end, also on failure
#   --tools     comma list of: ours, restic, borg, borg-zstd, casync (default: all five)
#   --runs N    full rounds; tools are interleaved (round-robin, rotating the start) (default 1)
#   --json FILE also write the results (samples, medians, machine, versions) as JSON
#   --breakdown after the timed rounds, one untimed round per tool that backs up each dataset
#               part (vm disk, container tar, /etc/pve tree) alone, to show what grows each repo
#   --no-timed-sync  do not count the final `sync` in backup/restore wall time (see bench/README.md)
# Env: HOMELAB_AUTOPILOT_BIN  our binary (default: cargo build --release, target/release/...)
#      BORG_ENCRYPTION        borg init --encryption mode (default none; repokey* gets a random
#                             passphrase through BORG_PASSPHRASE)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "compare.sh: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
tools_csv="ours,restic,borg,borg-zstd,casync"
runs=1 json_out="" breakdown=0 timed_sync=1
pos=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tools) [ $# -ge 2 ] || die "--tools needs a value"; tools_csv=$2; shift 2 ;;
    --runs) [ $# -ge 2 ] || die "--runs needs a value"; runs=$2; shift 2 ;;
    --json) [ $# -ge 2 ] || die "--json needs a value"; json_out=$2; shift 2 ;;
    --breakdown) breakdown=1; shift ;;
    --no-timed-sync) timed_sync=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) pos+=("$1"); shift ;;
  esac
done
[ ${#pos[@]} -eq 2 ] || { usage >&2; die "expected DATASET and WORKDIR"; }
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"
dataset=$(cd "${pos[0]}" 2>/dev/null && pwd) || die "DATASET '${pos[0]}' is not a directory"
IFS=, read -r -a tools <<<"$tools_csv"
[ ${#tools[@]} -gt 0 ] || die "--tools is empty"
for t in "${tools[@]}"; do
  case "$t" in ours|restic|borg|borg-zstd|casync) ;; *) die "--tools: unknown tool '$t' (known: ours, restic, borg, borg-zstd, casync)" ;; esac
done
if [ -n "$json_out" ]; then
  json_dir=$(cd "$(dirname "$json_out")" 2>/dev/null && pwd) || die "--json: directory of '$json_out' does not exist"
  json_out="$json_dir/$(basename "$json_out")"
fi

# The dataset's two versions: file parts are single files, the tree part is a directory.
parts=(vm-disk.raw ct-dump.tar etc-pve)
src_of() { # src_of PART VERSION -> path in the dataset
  case "$1" in
    vm-disk.raw) echo "$dataset/vm-disk-$2.raw" ;;
    ct-dump.tar) echo "$dataset/ct-dump-$2.tar" ;;
    etc-pve) echo "$dataset/etc-pve-$2" ;;
  esac
}
for v in v1 v2; do for p in "${parts[@]}"; do
  [ -e "$(src_of "$p" "$v")" ] || die "DATASET lacks $(src_of "$p" "$v"): build it with ../shared/bench/make-dataset.sh"
done; done

# ---------------------------------------------------------------- prerequisites
need() { command -v "$1" >/dev/null || die "missing '$1' ($2)"; }
[ -x /usr/bin/time ] || die "missing /usr/bin/time (apt-get install time)"
need python3 "needed for the report"
need cmp "diffutils"
for t in "${tools[@]}"; do
  case "$t" in
    restic) need restic "apt-get install restic" ;;
    borg|borg-zstd) need borg "apt-get install borgbackup" ;;
    casync) need casync "apt-get install casync" ;;
  esac
done
ours_bin=""
if [[ ",$tools_csv," == *,ours,* ]]; then
  if [ -n "${HOMELAB_AUTOPILOT_BIN:-}" ]; then
    ours_bin=$HOMELAB_AUTOPILOT_BIN
  else
    echo "== cargo build --release (set HOMELAB_AUTOPILOT_BIN to skip)"
    (cd "$repo_root" && cargo build --release --quiet) || die "cargo build --release failed"
    ours_bin="$repo_root/target/release/homelab-autopilot"
  fi
  [ -x "$ours_bin" ] || die "our binary '$ours_bin' is not executable"
  "$ours_bin" store --help >/dev/null 2>&1 || die "'$ours_bin store --help' failed: this build has no store CLI"
fi

# ---------------------------------------------------------------- work area and cleanup
workdir_created=0
if [ ! -d "${pos[1]}" ]; then mkdir -p "${pos[1]}"; workdir_created=1; fi
workdir=$(cd "${pos[1]}" && pwd)
case "$workdir/" in "$dataset"/*) die "WORKDIR must not be inside DATASET" ;; esac
work=$(mktemp -d "$workdir/compare.XXXXXX")
cleanup() {
  local rc=$?
  rm -rf "$work"
  if [ "$workdir_created" = 1 ]; then rmdir "$workdir" 2>/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
mkdir -p "$work/logs" "$work/cache"
samples="$work/samples.tsv" parts_tsv="$work/breakdown.tsv"
printf 'run\ttool\tfirst_s\tincr_s\trestore_s\trepo_v1\trepo_v2\trepo_files\trepo_disk_v2\trss_init\trss_v1\trss_v2\trss_restore\tcpu_v1\tcpu_v2\tcpu_restore\tload1\n' >"$samples"
printf 'tool\tpart\tlogical_v1\tlogical_v2\trepo_v1\trepo_v2\n' >"$parts_tsv"

# Tool environments: everything a tool keeps (caches, keys, security dirs) lives under $work.
( umask 077; head -c 24 /dev/urandom | base64 >"$work/restic-password" )
export RESTIC_PASSWORD_FILE="$work/restic-password"
export BORG_BASE_DIR="$work/cache/borg"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
borg_encryption=${BORG_ENCRYPTION:-none}
case "$borg_encryption" in
  none|authenticated*) ;;
  repokey*|keyfile*) BORG_PASSPHRASE=$(head -c 24 /dev/urandom | base64); export BORG_PASSPHRASE ;;
  *) die "BORG_ENCRYPTION='$borg_encryption' is not a borg 1.2 encryption mode" ;;
esac

# ---------------------------------------------------------------- measuring
# run_step LOGNAME CMD...: runs CMD (stdout to LOGNAME.out, stderr to LOGNAME.err) under
# /usr/bin/time; sets STEP_S (wall seconds, including a final sync unless --no-timed-sync),
# STEP_RSS (peak RSS in KiB: ru_maxrss of the command and every process it waited for), STEP_CPU
# (user+system CPU seconds of the same processes) and STEP_LOAD (1-minute load average at start).
run_step() {
  local log="$work/logs/$1"; shift
  sync -f "$work"
  STEP_LOAD=$(cut -d' ' -f1 /proc/loadavg)
  local t0=$EPOCHREALTIME rc=0
  /usr/bin/time -f '%M %U %S' -o "$log.rss" "$@" >"$log.out" 2>"$log.err" || rc=$?
  [ "$timed_sync" = 1 ] && sync -f "$work"
  local t1=$EPOCHREALTIME
  if [ "$rc" != 0 ]; then
    echo "compare.sh: step failed (exit $rc): $*" >&2
    tail -n 20 "$log.out" "$log.err" >&2 || true
    exit 1
  fi
  [ "$timed_sync" = 1 ] || sync -f "$work"
  STEP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  local rss user sys
  read -r rss user sys <<<"$(tail -n 1 "$log.rss")"
  [[ $rss =~ ^[0-9]+$ && $user =~ ^[0-9.]+$ && $sys =~ ^[0-9.]+$ ]] \
    || die "could not read peak RSS and CPU times from $log.rss"
  STEP_RSS=$rss
  STEP_CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
}
repo_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }'; }
repo_files() { find "$1" -type f | wc -l; }
repo_disk() { du -sB1 "$1" | cut -f1; }
logical_bytes() { find "$@" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }'; }

# stage VERSION [PART...]: $work/src holds the given parts of VERSION under version-independent
# names (vm-disk.raw, ct-dump.tar, etc-pve/), as every tool sees the same path on both days, like
# a real daily backup. Hard links when possible (same file system), else a sparse copy.
stage() {
  local v=$1; shift
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=("${parts[@]}")
  rm -rf "$work/src"; mkdir "$work/src"
  for p in "${want[@]}"; do
    cp -al "$(src_of "$p" "$v")" "$work/src/$p" 2>/dev/null \
      || cp -a --sparse=always "$(src_of "$p" "$v")" "$work/src/$p"
  done
}

# ---------------------------------------------------------------- our store's CLI
# The only place that knows the shape of `store ... --json` output. Prints the id of the snapshot
# just made: from the `backup --json` output (one JSON document or JSON lines; the last object with
# an id-like key wins), else from `list --json` (newest entry named NAME), else fails loudly.
ours_snapshot_id() { # ours_snapshot_id BACKUP_STDOUT_FILE REPO NAME
  local list_file="$work/logs/ours-list.json"
  "$ours_bin" store --repo "$2" list --json >"$list_file" 2>"$list_file.err" || : >"$list_file"
  python3 - "$1" "$list_file" "$3" <<'PY'
import json, sys
backup_out, list_out, name = sys.argv[1], sys.argv[2], sys.argv[3]
ID_KEYS = ("snapshot_id", "snapshotId", "snapshot", "id", "snap_id")
TIME_KEYS = ("time", "created", "created_at", "createdAt", "timestamp", "started", "start_time")

def docs(path):
    text = open(path, encoding="utf-8", errors="replace").read().strip()
    if not text:
        return []
    try:
        return [json.loads(text)]
    except ValueError:
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

def id_of(obj):
    if not isinstance(obj, dict):
        return None
    for k in ID_KEYS:
        v = obj.get(k)
        if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
            return str(v)
        if isinstance(v, dict) and id_of(v):
            return id_of(v)
    return None

for doc in reversed(docs(backup_out)):
    for cand in ([doc] + [doc.get(k) for k in ("summary", "result", "data")] if isinstance(doc, dict) else []):
        found = id_of(cand)
        if found:
            print(found); sys.exit(0)

entries = []
for doc in docs(list_out):
    if isinstance(doc, list):
        entries += doc
    elif isinstance(doc, dict):
        for k in ("snapshots", "items", "data"):
            if isinstance(doc.get(k), list):
                entries += doc[k]
        if id_of(doc) and doc.get("name") == name:
            entries.append(doc)
named = [e for e in entries if isinstance(e, dict) and e.get("name") == name and id_of(e)]
if named:
    def when(e):
        for k in TIME_KEYS:
            if k in e:
                return str(e[k])
        return ""
    named = sorted(enumerate(named), key=lambda ie: (when(ie[1]), ie[0]))  # stable: list order breaks ties
    print(id_of(named[-1][1])); sys.exit(0)
show = lambda p: open(p, encoding="utf-8", errors="replace").read()[:600] or "(empty)"
sys.stderr.write(f"no snapshot id for name {name!r} in `backup --json` output:\n{show(backup_out)}\n"
                 f"nor in `list --json` output:\n{show(list_out)}\n"
                 "update ours_snapshot_id in bench/compare.sh to the store's JSON shape\n")
sys.exit(1)
PY
}

# ---------------------------------------------------------------- the tools
# tool_init TOOL REPO; tool_backup TOOL REPO LABEL LOG; tool_restore TOOL REPO DEST LOG.
# Each backs up $work/src (cwd $work, relative path `src`) and restores the v2 snapshot.
declare -A ours_snap=()
tool_init() {
  case "$1" in
    ours) run_step "$1-init" "$ours_bin" store --repo "$2" init ;;
    restic) run_step "$1-init" restic --repo "$2" --cache-dir "$work/cache/restic" -q init --repository-version 2 ;;
    borg|borg-zstd) run_step "$1-init" borg init --encryption="$borg_encryption" "$2" ;;
    casync) mkdir "$2"; run_step "$1-init" true ;;
  esac
}
tool_backup() {
  local t=$1 r=$2 label=$3 log=$4
  case "$t" in
    ours)
      run_step "$log" env -C "$work" "$ours_bin" store --repo "$r" backup --name bench-data --json src
      ours_snap[$label]=$(ours_snapshot_id "$work/logs/$log.out" "$r" bench-data) \
        || die "ours: cannot tell the id of snapshot $label (see above)" ;;
    restic) run_step "$log" env -C "$work" restic --repo "$r" --cache-dir "$work/cache/restic" -q \
              backup --host bench --compression auto src ;;
    borg) run_step "$log" env -C "$work" borg create "$r::$label" src ;;
    borg-zstd) run_step "$log" env -C "$work" borg create --compression zstd,3 "$r::$label" src ;;
    casync) run_step "$log" env -C "$work" casync make --store="$r/default.castr" --chunk-size=65536 \
              "$r/$label.caidx" src ;;
  esac
}
tool_restore() {
  local t=$1 r=$2 dest=$3 log=$4
  case "$t" in
    ours) run_step "$log" "$ours_bin" store --repo "$r" restore "${ours_snap[v2]}" --to "$dest" ;;
    restic) run_step "$log" restic --repo "$r" --cache-dir "$work/cache/restic" -q \
              restore latest --host bench --target "$dest" ;;
    borg|borg-zstd) mkdir "$dest"; run_step "$log" env -C "$dest" borg extract "$r::v2" ;;
    casync) run_step "$log" casync extract --store="$r/default.castr" "$r/v2.caidx" "$dest" ;;
  esac
}

# verify_restore DEST: the restored tree (wherever under DEST the tool put `src`) must hold exactly
# the staged v2 files, each identical by cmp. Any difference aborts the benchmark.
verify_restore() {
  local dest=$1 tool=$2 root
  [ -d "$dest" ] || die "$tool: restore target $dest is not a directory"
  root=$(find "$dest" -name vm-disk.raw -type f -printf '%h\n' | head -n 1)
  [ -n "$root" ] || die "$tool: restored tree under $dest has no vm-disk.raw"
  (cd "$work/src" && find . -type f | LC_ALL=C sort) >"$work/want.lst"
  (cd "$root" && find . -type f | LC_ALL=C sort) >"$work/got.lst"
  if ! cmp -s "$work/want.lst" "$work/got.lst"; then
    diff "$work/want.lst" "$work/got.lst" | head -n 20 >&2 || true
    die "$tool: restored file list differs from v2 (first differences above)"
  fi
  local f n=0
  while IFS= read -r f; do
    cmp -- "$work/src/$f" "$root/$f" >&2 || die "$tool: restored $f differs from v2"
    n=$((n + 1))
  done <"$work/want.lst"
  echo "   verified $n files with cmp"
}

# ---------------------------------------------------------------- one round for one tool
one_round() { # one_round RUN TOOL
  local run=$1 t=$2 r="$work/repo-$2" dest="$work/restore-$2"
  local first incr rest v1b v2b files disk ri r1 r2 rr c1 c2 cr l1 l2 lr
  echo "== run $run/$runs: $t"
  tool_init "$t" "$r"; ri=$STEP_RSS
  stage v1; tool_backup "$t" "$r" v1 "$t-$run-v1"; first=$STEP_S; r1=$STEP_RSS; c1=$STEP_CPU; l1=$STEP_LOAD
  v1b=$(repo_bytes "$r")
  stage v2; tool_backup "$t" "$r" v2 "$t-$run-v2"; incr=$STEP_S; r2=$STEP_RSS; c2=$STEP_CPU; l2=$STEP_LOAD
  v2b=$(repo_bytes "$r"); files=$(repo_files "$r"); disk=$(repo_disk "$r")
  tool_restore "$t" "$r" "$dest" "$t-$run-restore"; rest=$STEP_S; rr=$STEP_RSS; cr=$STEP_CPU; lr=$STEP_LOAD
  echo "   v1 ${first}s, v2 ${incr}s, restore ${rest}s, repo $((v1b >> 20)) -> $((v2b >> 20)) MiB (load $l1 $l2 $lr)"
  verify_restore "$dest" "$t"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$t" "$first" "$incr" \
    "$rest" "$v1b" "$v2b" "$files" "$disk" "$ri" "$r1" "$r2" "$rr" "$c1" "$c2" "$cr" \
    "$(awk -v a="$l1" -v b="$l2" -v c="$lr" 'BEGIN { printf "%.2f", (a + b + c) / 3 }')" >>"$samples"
  retire "$r" "$dest"
  rm -rf "$work/cache"/*
  unset 'ours_snap[v1]' 'ours_snap[v2]'
}

# retire PATH...: frees the space of a finished round at once but keeps its many small files
# (the restored /etc/pve tree, casync's chunk files) until the end of the run. This ext4 has no
# journal, and then it will not reuse an inode freed in the last 60-300 s: each file created
# scans past every such inode (find_inode_bit -> recently_deleted), so a tool restoring 4,000
# files seconds after the previous round deleted 4,000 paid up to 1.2 s more system time, and
# the faster its backups, the more it paid. Deleting only files >= 1 MiB frees 2 inodes a round.
retire() {
  local p
  mkdir -p "$work/trash"
  for p in "$@"; do
    [ -e "$p" ] && mv "$p" "$work/trash/$(basename "$p").$EPOCHREALTIME"
  done
  find "$work/trash" -type f -size +1023k -delete
  # On a shared disk, never hold on to the leftovers when space runs low (about 0.5 GB a round).
  local avail_kib
  avail_kib=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
  if [ "${avail_kib:-0}" -lt $((3 << 20)) ]; then
    echo "   (less than 3 GiB free: deleting retired files now; the next restore may pay for it)"
    rm -rf "$work/trash"
  fi
}

breakdown_round() { # breakdown_round TOOL: repo growth per dataset part, each part alone
  local t=$1 p r="$work/repo-$1" a b l1 l2
  for p in "${parts[@]}"; do
    echo "== breakdown: $t, $p"
    tool_init "$t" "$r"
    stage v1 "$p"; tool_backup "$t" "$r" v1 "$t-part-$p-v1"; a=$(repo_bytes "$r")
    stage v2 "$p"; tool_backup "$t" "$r" v2 "$t-part-$p-v2"; b=$(repo_bytes "$r")
    l1=$(logical_bytes "$(src_of "$p" v1)"); l2=$(logical_bytes "$(src_of "$p" v2)")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$p" "$l1" "$l2" "$a" "$b" >>"$parts_tsv"
    rm -rf "$r" "$work/cache"/*
  done
}

# ---------------------------------------------------------------- main
echo "== warming the page cache (reading the dataset once)"
find "$dataset" -type f -exec cat {} + >/dev/null
logical_v1=0 logical_v2=0
for p in "${parts[@]}"; do
  logical_v1=$((logical_v1 + $(logical_bytes "$(src_of "$p" v1)")))
  logical_v2=$((logical_v2 + $(logical_bytes "$(src_of "$p" v2)")))
done

n=${#tools[@]}
for ((run = 1; run <= runs; run++)); do
  for ((i = 0; i < n; i++)); do one_round "$run" "${tools[$(((i + run - 1) % n))]}"; done
done
if [ "$breakdown" = 1 ]; then for t in "${tools[@]}"; do breakdown_round "$t"; done; fi

# Machine and tool versions for the report.
ver() { "$@" 2>&1 | head -n 1 || true; }
fs_src=$(findmnt -no SOURCE -T "$work" 2>/dev/null | head -n 1 || true)
blk=$(lsblk -no PKNAME "$fs_src" 2>/dev/null | head -n 1 || true); blk=${blk:-$(basename "${fs_src:-?}")}
rota=$(cat "/sys/block/$blk/queue/rotational" 2>/dev/null || echo "?")
{
  echo "nproc=$(nproc)"
  echo "cpu=$(LC_ALL=C lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
  echo "ram_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
  echo "disk=$fs_src $(findmnt -no FSTYPE -T "$work" 2>/dev/null | head -n 1 || true) (/dev/$blk, rotational=$rota)"
  echo "kernel=$(uname -r)"
  # shellcheck disable=SC1091
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "dataset=$dataset"
  echo "logical_v1=$logical_v1"
  echo "logical_v2=$logical_v2"
  echo "runs=$runs"
  echo "timed_sync=$timed_sync"
  echo "borg_encryption=$borg_encryption"
  for t in "${tools[@]}"; do
    case "$t" in
      ours) echo "version.ours=$(ver "$ours_bin" --version)" ;;
      restic) echo "version.restic=$(ver restic version)" ;;
      borg|borg-zstd) echo "version.$t=$(ver borg --version)" ;;
      casync) echo "version.casync=casync $(ver casync --version)" ;;
    esac
  done
} >"$work/meta.txt"
python3 "$here/report.py" "$work/meta.txt" "$samples" "$parts_tsv" "$json_out"
