#!/usr/bin/env bash
# Where the bytes of a stratum repository go: objects by type, catalogs by kind (the
# catalog's `kind` property: layer, flat, ...), and how much of the catalogs is inlined
# file content. Needs zstd and sqlite3.  Usage: bench/repo-breakdown.sh REPO
# Prints a markdown table (bytes are stored, i.e. compressed, object sizes; "inline"
# is the uncompressed size of the inlined file bytes inside those catalogs).
set -euo pipefail
export LC_ALL=C
repo=${1:?usage: $0 REPO}
[[ -d $repo/data ]] || { echo "$repo: no data/ directory" >&2; exit 1; }
for t in zstd sqlite3; do
    command -v "$t" >/dev/null || { echo "$0: needs $t" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{
    find "$repo/data" -type f ! -name '*C' -printf '%f %s\n' | awk '{
        t = substr($1, length($1)); if (t ~ /[0-9a-f]/) t = "content"; else t = "object type " t
        printf "%s\t%s\t0\t0\t0\n", t, $2 }'
    find "$repo/data" -type f -name '*C' -printf '%s %p\n' | while read -r size path; do
        zstd -dcq "$path" >"$tmp/c.db"
        kind=$(sqlite3 "$tmp/c.db" "select value from properties where key = 'kind'" 2>/dev/null || true)
        read -r rows inl inb < <(sqlite3 -separator ' ' "$tmp/c.db" \
            "select count(*), coalesce(sum(inline is not null), 0), coalesce(sum(length(inline)), 0) from entries" 2>/dev/null || echo "0 0 0")
        printf 'catalog %s\t%s\t%s\t%s\t%s\n' "${kind:-?}" "$size" "$rows" "$inl" "$inb"
    done
} | awk -F '\t' '
    { n[$1]++; b[$1] += $2; r[$1] += $3; i[$1] += $4; ib[$1] += $5; tb += $2 }
    END {
        print "| objects | count | stored MB | share | catalog rows | inlined files | inline MB (raw) |"
        print "|---|---:|---:|---:|---:|---:|---:|"
        for (k in n) printf "| %s | %d | %.2f | %.0f%% | %d | %d | %.2f |\n", k, n[k], b[k] / 1e6, 100 * b[k] / tb, r[k], i[k], ib[k] / 1e6 | "sort"
        close("sort")
        printf "| total | | %.2f | 100%% | | | |\n", tb / 1e6
    }'
