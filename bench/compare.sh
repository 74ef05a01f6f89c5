#!/usr/bin/env bash
# Compare two beanstalkd-protocol servers with stalkd-bench.
#
# Server A (default: stalkd, built here with `cargo build --release`) and
# server B (default: Debian's beanstalkd, installed with apt-get if missing)
# are started fresh on 127.0.0.1 for every single run, alternately, for
# several rounds; the table shows the median of each metric and the A/B ratio.
#
#   bench/compare.sh [--rounds N] [--duration S] [--cases "put cycle ..."] [--durable] [--quick] [--out DIR]
#   bench/compare.sh --report DIR   (the table of a finished run in DIR, again)
#   (--durable: put+reserve+delete with 1, 10 and 100 clients, with -b and with -b -f 0)
#
# Environment:
#   SERVER_A, SERVER_B   server binaries (must accept -l ADDR -p PORT [-b DIR] [-f MS])
#   NAME_A, NAME_B       column names (default: stalkd, beanstalkd)
#   PORT_A, PORT_B       ports (default 11301, 11302)
#   BENCH                a prebuilt stalkd-bench binary (skips building the example)
#   BINLOG_PARENT        where binlog temp dirs go (default /var/tmp; avoid tmpfs,
#                        where fsync is free)
#   CARGO_TARGET_DIR     honoured when building
#
# Test the script itself with beanstalkd on both sides:
#   SERVER_A=/usr/bin/beanstalkd NAME_A=beanstalkd-A bench/compare.sh --quick
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
DURATION=5
OUT=""
REPORT=""
DURABLE_CASES="prd-c1-binlog prd-c10-binlog prd-c100-binlog prd-c1-fsync prd-c10-fsync prd-c100-fsync"
CASES_DEFAULT="put pipeline-put pipeline-prd reserve cycle cycle-paced many-conns tubes-100 tubes-10k big delayed memory idle-conns put-binlog cycle-binlog put-fsync cycle-fsync"
CASES="$CASES_DEFAULT"

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    echo "cases: $CASES_DEFAULT"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        --durable) CASES=$DURABLE_CASES; shift ;;
        --quick) ROUNDS=1; DURATION=2; shift ;;
        --out) OUT=$2; shift 2 ;;
        --report) REPORT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [ -n "${SERVER_A:-}" ]; then NAME_A=${NAME_A:-A-$(basename "$SERVER_A")}; fi
NAME_A=${NAME_A:-stalkd}
NAME_B=${NAME_B:-beanstalkd}
if [ "$NAME_A" = "$NAME_B" ]; then NAME_A=$NAME_A-A; NAME_B=$NAME_B-B; fi
PORT_A=${PORT_A:-11301}
PORT_B=${PORT_B:-11302}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BINLOG_PARENT=${BINLOG_PARENT:-/var/tmp}

# Bench flags and extra server flags of each case. BINLOG stands for a fresh
# temporary directory.
case_bench_args() {
    case "$1" in
        # Job caps well above what either server does in --duration, so every
        # run is time-bound and measures the same span.
        put) echo "--scenario put --jobs 1000000" ;;
        pipeline-put) echo "--scenario pipeline --ops put" ;;
        pipeline-prd) echo "--scenario pipeline --ops put-reserve-delete" ;;
        reserve) echo "--scenario reserve --jobs 400000" ;;
        cycle) echo "--scenario cycle" ;;
        # Latency at a fixed load both servers sustain (issue: p99 at 20k jobs/s).
        cycle-paced) echo "--scenario cycle --rate 20000" ;;
        many-conns) echo "--scenario many-conns" ;;
        tubes-100) echo "--scenario tubes --no-sweep --tube-count 100" ;;
        tubes-10k) echo "--scenario tubes --no-sweep --tube-count 10000" ;;
        big) echo "--scenario big --jobs 400000" ;;
        delayed) echo "--scenario delayed" ;;
        memory) echo "--scenario memory" ;;
        idle-conns) echo "--scenario idle-conns" ;;
        put-binlog) echo "--scenario put --jobs 1000000" ;;
        cycle-binlog) echo "--scenario cycle" ;;
        put-fsync) echo "--scenario put --conns 50 --jobs 1000000" ;;
        cycle-fsync) echo "--scenario cycle --conns 50" ;;
        # Durable put+reserve+delete sweep (issue: 1, 10 and 100 clients),
        # not in the default set: run them with --durable.
        prd-c*-binlog | prd-c*-fsync)
            local n=${1#prd-c}
            echo "--scenario pipeline --ops put-reserve-delete --depth 1 --conns ${n%%-*}" ;;
        *) return 1 ;;
    esac
}

case_server_args() {
    case "$1" in
        *-binlog) echo "-b BINLOG" ;;
        *-fsync) echo "-b BINLOG -f 0" ;;
        *) echo "" ;;
    esac
}

for c in $CASES; do
    case_bench_args "$c" >/dev/null || { echo "unknown case: $c" >&2; exit 2; }
done

log() { echo "[compare] $*" >&2; }

ensure_beanstalkd() {
    if [ -x /usr/bin/beanstalkd ]; then return; fi
    log "installing beanstalkd with apt-get"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq beanstalkd >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq beanstalkd >/dev/null
    fi
    # The package may start a system service on 11300; we use our own ports.
}

build() {
    cd "$ROOT"
    if [ -z "${BENCH:-}" ]; then
        log "building stalkd-bench (cargo build --release --example stalkd-bench)"
        cargo build --release --example stalkd-bench
        BENCH=$TARGET/release/examples/stalkd-bench
    fi
    if [ -z "${SERVER_A:-}" ]; then
        log "building stalkd (cargo build --release)"
        cargo build --release
        SERVER_A=$TARGET/release/stalkd
    fi
    ensure_beanstalkd
    SERVER_B=${SERVER_B:-/usr/bin/beanstalkd}
    for b in "$BENCH" "$SERVER_A" "$SERVER_B"; do
        [ -x "$b" ] || { echo "not executable: $b" >&2; exit 1; }
    done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SPID=""
TMPDIRS=()
cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; fi
    for d in "${TMPDIRS[@]+"${TMPDIRS[@]}"}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server BIN PORT LOG [ARGS...]: sets SPID, waits until the port answers.
start_server() {
    local bin=$1 port=$2 logf=$3
    shift 3
    if port_busy "$port"; then
        echo "port $port is already in use; set PORT_A/PORT_B" >&2
        exit 1
    fi
    "$bin" -l 127.0.0.1 -p "$port" "$@" >"$logf" 2>&1 &
    SPID=$!
    for _ in $(seq 100); do
        port_busy "$port" && return 0
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $bin did not start on port $port (see $logf)" >&2
    return 1
}

stop_server() {
    [ -n "$SPID" ] || return 0
    if ! kill -0 "$SPID" 2>/dev/null; then
        local rc=0
        wait "$SPID" 2>/dev/null || rc=$?
        log "warning: the server exited during the run (status $rc); result dropped"
        SPID=""
        return 1
    fi
    kill "$SPID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=""
}

# run_one CASE NAME BIN PORT ROUND: one fresh server, one bench run, one line
# "CASE<TAB>NAME<TAB>ROUND<TAB>JSON" appended to the results file.
run_one() {
    local c=$1 name=$2 bin=$3 port=$4 round=$5
    local sargs dir="" json rc=0
    sargs=$(case_server_args "$c")
    if [[ "$sargs" == *BINLOG* ]]; then
        dir=$(mktemp -d -p "$BINLOG_PARENT" stalkd-bench-binlog.XXXXXX)
        TMPDIRS+=("$dir")
        sargs=${sargs//BINLOG/$dir}
    fi
    # shellcheck disable=SC2086 # word splitting of flag lists is intended
    start_server "$bin" "$port" "$OUT/$name-$c-$round.log" $sargs || return 0
    # shellcheck disable=SC2086
    json=$(timeout "$RUN_CAP" "$BENCH" --addr "127.0.0.1:$port" --pid "$SPID" \
        --duration "$DURATION" --json $(case_bench_args "$c") 2>>"$OUT/bench-stderr.log") || rc=$?
    local died=0
    stop_server || died=1
    if [ -n "$dir" ]; then rm -rf "$dir"; fi
    if [ "$died" = 1 ]; then
        printf '%s\t%s\t%s\t%s\n' "$c" "$name" "$round" "${json:-no result}" >>"$OUT/dropped.tsv"
        return 0
    fi
    if [ -z "$json" ]; then
        log "$c on $name: no result (exit $rc)"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\n' "$c" "$name" "$round" "$json" >>"$RESULTS"
    log "$c on $name (round $round): $(summary "$json"), load $(loadavg)"
}

# json_num JSON KEY: the number at KEY, or empty for null/missing.
json_num() {
    printf '%s' "$1" | grep -o "\"$2\":[-0-9.eE+]*" | head -1 | cut -d: -f2
}

# 1-minute load average: anything much above 1 during a run means other
# processes competed with the server and the bench for the 2 cores.
loadavg() { cut -d' ' -f1 /proc/loadavg; }

summary() {
    printf 'jobs/s %s, p99 %s us, errors %s' \
        "$(json_num "$1" jobs_per_s | cut -d. -f1)" "$(json_num "$1" p99_us)" "$(json_num "$1" errors)"
}

# The headline time of scenarios measured by a duration rather than a rate:
# many-conns (first put -> every blocked connection has its job) and delayed
# (first job due -> last job reserved).
time_metric() {
    case "$1" in
        many-conns | delayed) echo "time_s:$(json_num "$2" elapsed_s)" ;;
        *) echo "time_s:" ;;
    esac
}

# Turns the results file into "case metric name value round" lines.
metric_lines() {
    while IFS=$'\t' read -r c name round json; do
        local rss kept=""
        rss=$(json_num "$json" rss_per_job)
        [ -n "$rss" ] || rss=$(json_num "$json" rss_per_conn)
        # memory: RSS still held per job once every job is deleted.
        local after_delete
        # (only the memory scenario reports it; grep finds nothing elsewhere)
        after_delete=$(json_num "$json" rss_after_delete || true)
        if [ -n "$after_delete" ]; then
            kept=$(awk -v a="$after_delete" -v b="$(json_num "$json" rss_before)" \
                -v n="$(json_num "$json" jobs)" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n }')
        fi
        for m in "jobs_per_s:$(json_num "$json" jobs_per_s)" \
            "p99_us:$(json_num "$json" p99_us)" \
            "cpu_s_per_100k:$(json_num "$json" cpu_s_per_100k)" \
            "rss_bytes_per_unit:$rss" \
            "kept_bytes_per_job:$kept" \
            "errors:$(json_num "$json" errors)" \
            "$(time_metric "$c" "$json")"; do
            [ -n "${m#*:}" ] && printf '%s %s %s %s %s\n' "$c" "${m%%:*}" "$name" "${m#*:}" "$round"
        done
    done <"$RESULTS"
}

# Prints the table of medians and ratios (errors are summed, not medians).
# For jobs/s it also shows the lowest and highest ratio of a single round
# (A and B of one round run back to back), to show how far noise moves it.
table() {
    local order=" $CASES "
    metric_lines | sort -k1,1 -k2,2 -k3,3 -k4,4g | awk -v A="$NAME_A" -v B="$NAME_B" -v order="$order" '
        function flush() {
            if (key == "") return
            split(key, k, SUBSEP)
            if (k[2] == "errors") { v = 0; for (i = 1; i <= n; i++) v += vals[i] }
            else if (n % 2) v = vals[(n + 1) / 2]
            else v = (vals[n / 2] + vals[n / 2 + 1]) / 2
            med[k[1], k[2], k[3]] = v; have[k[1], k[2]] = 1; cases[k[1]] = 1
        }
        { cur = $1 SUBSEP $2 SUBSEP $3
          if (cur != key) { flush(); key = cur; n = 0 }
          vals[++n] = $4; at[$1, $2, $3, $5] = $4; rounds[$5] = 1 }
        END {
            flush()
            nm = split("jobs_per_s p99_us time_s cpu_s_per_100k rss_bytes_per_unit kept_bytes_per_job errors", ms, " ")
            label["jobs_per_s"] = "jobs/s"; label["p99_us"] = "p99 us"
            label["cpu_s_per_100k"] = "cpu s/100k jobs"; label["rss_bytes_per_unit"] = "rss B/job|conn"
            label["errors"] = "errors (sum)"; label["time_s"] = "time s"
            label["kept_bytes_per_job"] = "kept B/job (del)"
            printf "%-14s %-16s %14s %14s %8s  %s\n", "case", "metric", A, B, A "/" B, "rounds"
            nc = split(order, cl, " ")
            for (ci = 1; ci <= nc; ci++) {
                c = cl[ci]; if (!(c in cases)) continue
                first = 1
                for (mi = 1; mi <= nm; mi++) {
                    m = ms[mi]; if (!((c, m) in have)) continue
                    a = ((c, m, A) in med) ? med[c, m, A] : ""
                    b = ((c, m, B) in med) ? med[c, m, B] : ""
                    r = (a != "" && b != "" && b + 0 != 0) ? sprintf("%.2f", a / b) : "-"
                    if (m == "errors") r = ""
                    printf "%-14s %-16s %14s %14s %8s  %s\n", (first ? c : ""), label[m], fmt(a), fmt(b), r, spread(c, m)
                    first = 0
                }
            }
        }
        # "lo-hi" of the per-round A/B ratios of jobs/s; "" for other metrics.
        function spread(c, m,    rd, lo, hi, q) {
            if (m != "jobs_per_s") return ""
            lo = ""; hi = ""
            for (rd in rounds) {
                if (!((c, m, A, rd) in at) || !((c, m, B, rd) in at) || at[c, m, B, rd] + 0 == 0) continue
                q = at[c, m, A, rd] / at[c, m, B, rd]
                if (lo == "" || q < lo) lo = q
                if (hi == "" || q > hi) hi = q
            }
            return lo == "" ? "" : sprintf("%.2f-%.2f", lo, hi)
        }
        function fmt(x) {
            if (x == "") return "-"
            if (x + 0 >= 100 || x + 0 == int(x + 0)) return sprintf("%.0f", x)
            return sprintf("%.3f", x)
        }'
}

main() {
    if [ -n "$REPORT" ]; then
        # Only print the table of a finished run (its results.tsv).
        RESULTS=$REPORT/results.tsv
        CASES=$(cut -f1 "$RESULTS" | awk '!seen[$0]++' | tr '\n' ' ')
        table
        return
    fi
    build
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    OUT=${OUT:-$(mktemp -d -t stalkd-compare.XXXXXX)}
    mkdir -p "$OUT"
    RESULTS=$OUT/results.tsv
    : >"$RESULTS"
    RUN_CAP=$(awk -v d="$DURATION" 'BEGIN { printf "%d", 3 * d + 90 }')
    local ncases runs est cap
    ncases=$(echo $CASES | wc -w)
    runs=$((ncases * 2 * ROUNDS))
    est=$(awk -v r="$runs" -v d="$DURATION" 'BEGIN { printf "%.1f", r * (d + 4) / 60 }')
    cap=$((runs * (RUN_CAP + 10) / 60))
    log "A=$NAME_A ($SERVER_A) B=$NAME_B ($SERVER_B)"
    log "$ncases cases x 2 servers x $ROUNDS rounds = $runs runs of <= ${DURATION}s each:" \
        "about $est min (hard cap $cap min); results in $OUT"
    if awk -v l="$(loadavg)" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average is $(loadavg) before starting; results will be noisy"
    fi
    local round c
    for round in $(seq "$ROUNDS"); do
        for c in $CASES; do
            if [ $((round % 2)) = 1 ]; then
                run_one "$c" "$NAME_A" "$SERVER_A" "$PORT_A" "$round"
                run_one "$c" "$NAME_B" "$SERVER_B" "$PORT_B" "$round"
            else
                run_one "$c" "$NAME_B" "$SERVER_B" "$PORT_B" "$round"
                run_one "$c" "$NAME_A" "$SERVER_A" "$PORT_A" "$round"
            fi
        done
    done
    echo
    echo "medians of $ROUNDS rounds, ${DURATION}s cap per run, $(nproc) cores, $(date -u +%Y-%m-%d)"
    table | tee "$OUT/table.txt"
    echo "raw results: $RESULTS"
}

main
