#!/usr/bin/env bash
# The kpnode local testnet: the EAEU participants, India and the UAE, each with its own node
# on this machine (loopback only), doing exactly what their operators would do by hand.
#
#   scripts/testnet.sh up [--nodes RU,BY,KZ,AM,KG,IN,AE]   build, init, enrol every pair, start
#   scripts/testnet.sh demo                                exchange, confirm, void, rotate, print; table
#   scripts/testnet.sh status                              nodes, links and certificates
#   scripts/testnet.sh down [--clean]                      stop every daemon (--clean: delete data)
#
# Environment: KPNODE_TESTNET_DIR (default ./testnet), KPNODE_TESTNET_PORT (first port,
# default 7700; node i listens for peers on PORT+i and for its API on PORT+100+i),
# KPNODE_BIN (use this kpnode binary instead of building one), CARGO_TARGET_DIR (where cargo
# builds, as cargo reads it: a relative path is taken from the repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${KPNODE_TESTNET_DIR:-$ROOT/testnet}"
BASE_PORT="${KPNODE_TESTNET_PORT:-7700}"
ALL_NODES=(RU BY KZ AM KG IN AE)

declare -A AUTHORITY=(
  [RU]="Gokhran of Russia"
  [BY]="Ministry of Finance of the Republic of Belarus"
  [KZ]="Ministry of Industry and Construction of Kazakhstan"
  [AM]="Ministry of Economy of the Republic of Armenia"
  [KG]="Ministry of Natural Resources of the Kyrgyz Republic"
  [IN]="Gem and Jewellery Export Promotion Council of India"
  [AE]="UAE Kimberley Process Office"
)

say() { printf '%s\n' "$*"; }
die() { printf 'testnet: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

index_of() {
  local i
  for i in "${!ALL_NODES[@]}"; do
    [[ "${ALL_NODES[$i]}" == "$1" ]] && { echo "$i"; return; }
  done
  die "unknown node $1; choose from ${ALL_NODES[*]}"
}
peer_port() { echo $((BASE_PORT + $(index_of "$1"))); }
api_port() { echo $((BASE_PORT + 100 + $(index_of "$1"))); }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

nodes() {
  [[ -f "$DIR/nodes" ]] || die "no testnet in $DIR; run: scripts/testnet.sh up"
  cat "$DIR/nodes"
}

# The kpnode binary: KPNODE_BIN, or a release build made once.
BIN=""
binary() {
  if [[ -n "${KPNODE_BIN:-}" ]]; then
    [[ -x "$KPNODE_BIN" ]] || die "KPNODE_BIN=$KPNODE_BIN is not an executable"
    BIN="$KPNODE_BIN"
    return
  fi
  # Where cargo puts the build: CARGO_TARGET_DIR if set (cargo runs from $ROOT below, so a
  # relative one is relative to it), else ./target.
  local target="${CARGO_TARGET_DIR:-target}"
  [[ "$target" == /* ]] || target="$ROOT/$target"
  BIN="$target/release/kpnode"
  if [[ "${1:-}" == build ]]; then
    command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (https://rustup.rs) and try again"
    say "Building kpnode (release) …"
    (cd "$ROOT" && cargo build --release --quiet -p kp-node --bin kpnode) || die "the build failed"
  fi
  [[ -x "$BIN" ]] || die "$BIN is missing; run: scripts/testnet.sh up"
}

kp() { "$BIN" "$@"; }

running() {
  local pidfile="$DIR/$1/kpnode.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# Waits (with a progress line) until "$@" succeeds, or fails after $1 seconds.
wait_for() {
  local timeout="$1" what="$2"; shift 2
  local start=$SECONDS
  until "$@"; do
    if (( SECONDS - start >= timeout )); then
      printf '\n' >&2
      return 1
    fi
    printf '\r  waiting for %s … %ss' "$what" "$((SECONDS - start))" >&2
    sleep 0.2
  done
  (( SECONDS - start > 0 )) && printf '\r  %s: done in %ss            \n' "$what" "$((SECONDS - start))" >&2
  return 0
}

links_up() {
  local want=$1 up=0 code
  for code in $(nodes); do
    up=$((up + $(kp status --dir "$DIR/$code" 2>/dev/null | awk '$2 == "up" {n++} END {print n+0}')))
  done
  LINKS_UP=$up
  (( up >= want ))
}

cmd_up() {
  local list="${ALL_NODES[*]}"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --nodes) [[ $# -ge 2 ]] || die "--nodes needs a list such as RU,IN,AE"; list="${2//,/ }"; shift 2 ;;
      -h|--help) usage ;;
      *) die "unknown option $1 for up" ;;
    esac
  done
  local code
  for code in $list; do index_of "$code" >/dev/null; done
  [[ $(wc -w <<<"$list") -ge 2 ]] || die "a testnet needs at least two nodes"
  if [[ -f "$DIR/nodes" && "$(cat "$DIR/nodes")" != "$list" ]]; then
    die "$DIR already holds a testnet of $(cat "$DIR/nodes" | tr '\n' ' '); run: scripts/testnet.sh down --clean"
  fi
  binary build
  mkdir -p "$DIR"
  echo "$list" > "$DIR/nodes"

  for code in $list; do
    if [[ -f "$DIR/$code/node.toml" ]]; then
      say "$code: resuming the node in $DIR/$code"
      continue
    fi
    for port in "$(peer_port "$code")" "$(api_port "$code")"; do
      port_in_use "$port" && die "port $port (for $code) is in use by another program; stop it, or set KPNODE_TESTNET_PORT"
    done
    kp init --participant "$code" --authority "${AUTHORITY[$code]}" --dir "$DIR/$code" \
      --peer-listen "127.0.0.1:$(peer_port "$code")" --api-listen "127.0.0.1:$(api_port "$code")" >/dev/null
    # One console account per role, for a demo: a password anyone can read from the listing
    # below, on loopback only. Never do this on a real node: `kpnode users add` prints a
    # one-time password instead.
    local role
    for role in clerk supervisor customs auditor; do
      demo_password "$code" "$role" | kp users add "$role" --role "$role" --password-stdin --dir "$DIR/$code" >/dev/null
    done
    say "$code: created (${AUTHORITY[$code]}), with console users clerk, supervisor, customs, auditor"
  done

  # Bundles and fingerprints, as each operator would send and read them to the others.
  for code in $list; do
    kp peer export --dir "$DIR/$code" --out "$DIR/$code/$code.bundle" | sed -n 's/^fingerprint: //p' > "$DIR/$code/fingerprint"
  done
  local a b n=0
  for a in $list; do
    for b in $list; do
      [[ "$a" == "$b" || -f "$DIR/$a/enrolled-$b" ]] && continue
      kp peer add "$DIR/$b/$b.bundle" --fingerprint "$(cat "$DIR/$b/fingerprint")" --dir "$DIR/$a" >/dev/null
      touch "$DIR/$a/enrolled-$b"
      n=$((n + 1))
    done
  done
  (( n > 0 )) && say "Enrolled $n peer pairs, each after checking the partner's fingerprint"

  for code in $list; do
    running "$code" && continue
    for port in "$(peer_port "$code")" "$(api_port "$code")"; do
      port_in_use "$port" && die "port $port (for $code) is in use by another program; stop it, or set KPNODE_TESTNET_PORT"
    done
    nohup "$BIN" run --dir "$DIR/$code" >>"$DIR/$code/kpnode.log" 2>&1 &
    echo $! > "$DIR/$code/kpnode.pid"
  done
  for code in $list; do
    if ! wait_for 30 "$code to start" kp status --dir "$DIR/$code" >/dev/null 2>&1; then
      say "$code did not start; the end of its log ($DIR/$code/kpnode.log):" >&2
      tail -n 20 "$DIR/$code/kpnode.log" >&2
      die "$code failed to start"
    fi
    running "$code" || { tail -n 20 "$DIR/$code/kpnode.log" >&2; die "$code exited right after starting"; }
  done
  local count; count=$(wc -w <<<"$list")
  local want=$((count * (count - 1)))
  LINKS_UP=0
  wait_for 60 "all $want links" links_up "$want" || die "only $LINKS_UP of $want links came up; see the logs in $DIR/*/kpnode.log"
  cmd_status_table
  console_table
}

# The testnet's demo password of a console user.
demo_password() { printf '%s-%s-demo-pass\n' "$(tr '[:upper:]' '[:lower:]' <<<"$1")" "$2"; }

console_table() {
  local code
  printf '\nConsoles (sign in as clerk, supervisor, customs or auditor; password NODE-ROLE-demo-pass):\n'
  for code in $(nodes); do
    printf '  %-4s http://127.0.0.1:%s/   e.g. customs / %s\n' "$code" "$(api_port "$code")" "$(demo_password "$code" customs)"
  done
}

cmd_status_table() {
  local code
  printf '\n%-4s %-52s %-17s %-17s %s\n' NODE AUTHORITY PEERS API STATE
  for code in $(nodes); do
    local state=stopped
    running "$code" && state="running (pid $(cat "$DIR/$code/kpnode.pid"))"
    printf '%-4s %-52s %-17s %-17s %s\n' "$code" "${AUTHORITY[$code]}" "127.0.0.1:$(peer_port "$code")" "127.0.0.1:$(api_port "$code")" "$state"
  done
  printf '\nLinks (row dials column):\n     '
  for code in $(nodes); do printf '%-5s' "$code"; done
  printf '\n'
  local a b
  for a in $(nodes); do
    printf '%-5s' "$a"
    local st=""
    running "$a" && st=$(kp status --dir "$DIR/$a" 2>/dev/null || true)
    for b in $(nodes); do
      if [[ "$a" == "$b" ]]; then printf '%-5s' "·"
      elif awk -v p="$b" '$1 == p && $2 == "up" {f=1} END {exit !f}' <<<"$st"; then printf '%-5s' "up"
      else printf '%-5s' "--"
      fi
    done
    printf '\n'
  done
}

# Demo certificates: exporter, importer, exporter firm, importer firm, HS code, carats, US$,
# port of export.
DEMO_CASES=(
  "RU|IN|ALROSA PJSC, 6 Lenina St, Mirny 678174|Kiran Gems Pvt Ltd, Bharat Diamond Bourse, Mumbai 400051|7102.31|1520.35|4231000.00|Moscow Sheremetyevo"
  "RU|AE|ALROSA PJSC, 6 Lenina St, Mirny 678174|Star Rays DMCC, Almas Tower, Jumeirah Lakes Towers, Dubai|7102.10|3200.00|2150000.00|Moscow Sheremetyevo"
  "BY|RU|JSC Kristall, 2 Chkalova St, Gomel 246014|Smolensk Kristall PA, 27 Shkolnaya St, Smolensk 214031|7102.31|410.20|612000.00|Minsk National Airport"
  "KZ|AE|Kazakhstan Diamond Company LLP, 15 Abay Ave, Almaty 050000|Almas Trading DMCC, Dubai Diamond Exchange, Dubai|7102.21|980.00|41500.00|Almaty International Airport"
  "AM|IN|Shoghakn CJSC, 12 Arshakunyats Ave, Yerevan 0023|Venus Jewel, Ichchhapor Diamond Park, Surat 394510|7102.31|215.75|388000.00|Zvartnots International Airport"
  "KG|AE|Ala-Too Minerals LLC, 104 Chui Ave, Bishkek 720040|Gemfields Rough DMCC, Almas Tower, Dubai|7102.10|640.00|198000.00|Manas International Airport"
  "AE|IN|Star Rays DMCC, Almas Tower, Jumeirah Lakes Towers, Dubai|Hari Krishna Exports, Varachha Road, Surat 395006|7102.31|1105.60|2874000.00|Dubai International Airport"
)

has_node() { grep -qw "$1" <<<"$(nodes)"; }

cert_json() {
  local from=$1 to=$2 exporter=$3 importer=$4 hs=$5 carats=$6 usd=$7 port=$8
  local today expires; today=$(date -u +%F); expires=$(date -u -d "+45 days" +%F)
  cat <<JSON
{
  "exporting_participant": "$from",
  "importing_participant": "$to",
  "issuing_authority": "${AUTHORITY[$from]}",
  "exporter": { "name": "${exporter%%,*}", "address": "${exporter#*, }" },
  "importer": { "name": "${importer%%,*}", "address": "${importer#*, }" },
  "issued_on": "$today",
  "expires_on": "$expires",
  "parcels": [
    { "hs_code": "$hs", "carats": "$carats", "value_usd": "$usd", "origin": "$from" },
    { "hs_code": "7102.21", "carats": "12.40", "value_usd": "620.00", "origin": "MIXED" }
  ],
  "shipment": { "port_of_export": "$port", "customs_reference": "$from-$(date -u +%y%m%d)-$RANDOM" },
  "declarations": [ { "code": "WDC-SoW", "text": "The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict and in compliance with United Nations resolutions." } ]
}
JSON
}

# The status of certificate $2 on node $1, from its listing.
cert_status() {
  kp cert list --dir "$DIR/$1" 2>/dev/null | awk -v n="$2" '$1 == n {print $4}'
}
status_is() { [[ "$(cert_status "$1" "$2")" == "$3" ]]; }

cmd_demo() {
  binary
  local code
  for code in $(nodes); do running "$code" || die "$code is not running; run: scripts/testnet.sh up"; done
  local work="$DIR/demo"; mkdir -p "$work"
  : > "$DIR/demo.tsv"
  local cases=() c from to
  for c in "${DEMO_CASES[@]}"; do
    IFS='|' read -r from to _ <<<"$c"
    has_node "$from" && has_node "$to" && cases+=("$c")
  done
  (( ${#cases[@]} > 0 )) || die "no demo certificate fits these nodes; include RU and IN, for example"
  # One void and one discrepancy, on KZ→AE and AM→IN when those nodes are up.
  local void_i=$(( ${#cases[@]} > 1 ? 1 : -1 )) disc_i=$(( ${#cases[@]} - 1 ))
  local i
  for i in "${!cases[@]}"; do
    [[ "${cases[$i]}" == KZ\|AE* ]] && void_i=$i
    [[ "${cases[$i]}" == AM\|IN* ]] && disc_i=$i
  done
  (( disc_i == void_i )) && disc_i=0

  say "Issuing ${#cases[@]} certificates …"
  local numbers=()
  for i in "${!cases[@]}"; do
    IFS='|' read -r from to exporter importer hs carats usd port <<<"${cases[$i]}"
    cert_json "$from" "$to" "$exporter" "$importer" "$hs" "$carats" "$usd" "$port" > "$work/$i.json"
    local out; out=$(kp cert submit "$work/$i.json" --dir "$DIR/$from")
    numbers[$i]=${out%% *}
    say "  $from -> $to  ${numbers[$i]}  ($hs, $carats ct, US\$ $usd)"
  done
  for i in "${!cases[@]}"; do
    IFS='|' read -r from to _ <<<"${cases[$i]}"
    wait_for 30 "${numbers[$i]} to reach $to" status_is "$from" "${numbers[$i]}" delivered \
      || die "${numbers[$i]} was not delivered to $to; see $DIR/$from/kpnode.log"
  done

  local today; today=$(date -u +%F)
  for i in "${!cases[@]}"; do
    IFS='|' read -r from to exporter importer hs carats usd port <<<"${cases[$i]}"
    local n=${numbers[$i]} expected
    if (( i == void_i )); then
      kp cert void "$n" --reason "shipment cancelled by the exporter" --dir "$DIR/$from" >/dev/null
      say "  $from voided $n (shipment cancelled)"
      expected=voided
    else
      # Total carats certified: the parcel above plus 12.40 of mixed origin.
      local total; total=$(awk -v a="$carats" 'BEGIN {printf "%.2f", a + 12.40}')
      local parcels=2
      if (( i == disc_i )); then
        total=$(awk -v a="$total" 'BEGIN {printf "%.2f", a - 0.85}')
        expected=import_discrepancy
      else
        expected=import_confirmed
      fi
      kp cert confirm "$n" --received-on "$today" --parcels "$parcels" --carats "$total" --dir "$DIR/$to" >/dev/null
      local note=""
      (( i == disc_i )) && note=" — 0.85 ct short of the certificate: a discrepancy"
      say "  $to confirmed receipt of $n ($parcels parcels, $total ct)$note"
    fi
    printf '%s\t%s\t%s\t%s\n' "$n" "$from" "$to" "$expected" >> "$DIR/demo.tsv"
  done

  if "$BIN" keys rotate --help >/dev/null 2>&1; then
    local r; r=$(awk -F'\t' 'NR==1 {print $2}' "$DIR/demo.tsv")
    say "Rotating $r's signing key (announced to every peer) …"
    kp keys rotate --signing --dir "$DIR/$r" >/dev/null
    local last_to; last_to=$(awk -F'\t' 'NR==1 {print $3}' "$DIR/demo.tsv")
    IFS='|' read -r from to exporter importer hs carats usd port <<<"${cases[0]}"
    cert_json "$from" "$to" "$exporter" "$importer" "$hs" "$carats" "$usd" "$port" > "$work/after-rotation.json"
    local out; out=$(kp cert submit "$work/after-rotation.json" --dir "$DIR/$from")
    local n=${out%% *}
    wait_for 30 "$n (signed with the new key) to reach $last_to" status_is "$from" "$n" delivered \
      || die "$n was not delivered after the rotation"
    printf '%s\t%s\t%s\t%s\n' "$n" "$from" "$to" delivered >> "$DIR/demo.tsv"
    say "  $n, signed with the new key, delivered to $to"
  fi

  # Every status settles on both sides.
  local num exp_node imp_node expected
  while IFS=$'\t' read -r num exp_node imp_node expected; do
    local imp_expected=$expected
    [[ "$expected" == delivered ]] && imp_expected=received
    wait_for 30 "$num to be $expected at $exp_node" status_is "$exp_node" "$num" "$expected" || die "$num is $(cert_status "$exp_node" "$num") at $exp_node, expected $expected"
    wait_for 30 "$num to be $imp_expected at $imp_node" status_is "$imp_node" "$num" "$imp_expected" || die "$num is $(cert_status "$imp_node" "$num") at $imp_node, expected $imp_expected"
  done < "$DIR/demo.tsv"

  # The first certificate on paper: the PDF its issuer prints, with the QR seal.
  local first_num first_from
  IFS=$'\t' read -r first_num first_from _ < "$DIR/demo.tsv"
  kp cert pdf "$first_num" --out "$work/$first_num.pdf" --dir "$DIR/$first_from" >/dev/null
  say "Printable certificate of $first_num (issued by $first_from): $work/$first_num.pdf"
  demo_table
}

demo_table() {
  [[ -s "$DIR/demo.tsv" ]] || { say "No demo has run yet."; return; }
  printf '\n%-16s %-8s %-20s %-20s\n' CERTIFICATE ROUTE AT-EXPORTER AT-IMPORTER
  local num from to expected
  while IFS=$'\t' read -r num from to expected; do
    local a b
    a=$(running "$from" && cert_status "$from" "$num" || echo "(stopped)")
    b=$(running "$to" && cert_status "$to" "$num" || echo "(stopped)")
    printf '%-16s %-8s %-20s %-20s\n' "$num" "$from->$to" "$a" "$b"
  done < "$DIR/demo.tsv"
}

cmd_status() {
  binary
  # Here, not in the subshells below, so a missing testnet fails once and with status 1.
  nodes >/dev/null
  cmd_status_table
  demo_table
}

cmd_down() {
  local clean=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --clean) clean=1; shift ;;
      -h|--help) usage ;;
      *) die "unknown option $1 for down" ;;
    esac
  done
  if [[ -f "$DIR/nodes" ]]; then
    local code pid
    for code in $(cat "$DIR/nodes"); do
      running "$code" || continue
      pid=$(cat "$DIR/$code/kpnode.pid")
      kill -TERM "$pid"
      local waited=0
      while kill -0 "$pid" 2>/dev/null && (( waited < 100 )); do sleep 0.1; waited=$((waited + 1)); done
      if kill -0 "$pid" 2>/dev/null; then
        say "$code (pid $pid) did not stop within 10s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$DIR/$code/kpnode.pid"
      say "$code stopped"
    done
  fi
  if (( clean )); then
    rm -rf "$DIR"
    say "Removed $DIR"
  elif [[ -d "$DIR" ]]; then
    say "Data kept in $DIR (logs in $DIR/*/kpnode.log); scripts/testnet.sh down --clean removes it"
  fi
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  demo) shift; cmd_demo "$@" ;;
  status) shift; cmd_status "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) usage ;;
esac
