#!/usr/bin/env bash
# Fills the ignored ROOT/.deps/usr with what a GPU machine without these -dev packages needs to
# build the tokenizers' regexes (PCRE2) and `podkv serve` (cpp-httplib), from the packages of this
# machine's apt (Debian 12 here; run it on a machine that has apt and a mirror, not on the GPU one):
#   include/pcre2.h                               libpcre2-dev's header (scripts/use_deps_pcre2.sh)
#   include/httplib.h, openssl/, brotli/,         libcpp-httplib-dev's header, and exactly the headers
#     zlib.h, zconf.h                             it opens under its .pc's -D flags (from libssl-dev,
#                                                 libbrotli-dev, zlib1g-dev)
#   lib/x86_64-linux-gnu/libcpp-httplib.so.0.11   the compiled library (libcpp-httplib0.11), a plain
#                                                 file named by its soname
#   lib/x86_64-linux-gnu/pkgconfig/               libpcre2-8.pc, and cpp-httplib.pc without its
#                                                 Requires.private (their headers are in include/, and a
#                                                 shared link needs none of their libraries)
# About 2.2 MB. Then carry .deps with the tree; scripts/use_deps_pcre2.sh and use_deps_httplib.sh
# (sourced by test_gpu.sh) use it on the GPU machine.
#   scripts/fill_deps.sh [ROOT]        (replaces ROOT/.deps/usr; CXX=... for the header scan)
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
arch=x86_64-linux-gnu
deps=$root/.deps/usr
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# libcpp-httplib-dev depends on the runtime package of its version (libcpp-httplib0.11 on Debian 12).
runtime=$(apt-cache depends libcpp-httplib-dev | awk '$1 == "Depends:" && $2 ~ /^libcpp-httplib[0-9]/ { print $2; exit }')
[ -n "$runtime" ] || { echo "fill_deps: apt knows no libcpp-httplib-dev runtime package" >&2; exit 1; }
(cd "$work" && apt-get download libpcre2-dev libcpp-httplib-dev "$runtime" libssl-dev zlib1g-dev libbrotli-dev) >"$work/download.log" 2>&1 ||
  { tail -5 "$work/download.log" >&2; exit 1; }
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/x"; done
src=$work/x/usr

rm -rf "$deps"
mkdir -p "$deps/include" "$deps/lib/$arch/pkgconfig"
cp "$src/include/pcre2.h" "$deps/include/"
cp "$src/lib/$arch/pkgconfig/libpcre2-8.pc" "$deps/lib/$arch/pkgconfig/"

# The library under its soname (the name the linker records and the loader looks for).
real=$(find "$src/lib/$arch" -maxdepth 1 -type f -name 'libcpp-httplib.so.*' | head -1)
soname=$(objdump -p "$real" | awk '$1 == "SONAME" { print $2 }')
cp "$real" "$deps/lib/$arch/$soname"
sed '/^Requires.private:/d' "$src/lib/$arch/pkgconfig/cpp-httplib.pc" >"$deps/lib/$arch/pkgconfig/cpp-httplib.pc"

# httplib.h and every header it opens from the unpacked packages with the .pc's -D flags (the
# arch folder's openssl/configuration.h and opensslconf.h go beside the other openssl headers).
defines=$(sed -n 's/^Cflags://p' "$src/lib/$arch/pkgconfig/cpp-httplib.pc" | grep -o -- '-D[A-Za-z0-9_=]*' || true)
# shellcheck disable=SC2086  # one word per -D flag
echo '#include <httplib.h>' | "${CXX:-c++}" -std=c++17 -M -x c++ - -I"$src/include/$arch" -I"$src/include" $defines |
  tr ' ' '\n' | grep "^$src/include/" | sort -u | while read -r header; do
    rel=${header#"$src/include/"}
    rel=${rel#"$arch/"}
    mkdir -p "$deps/include/$(dirname "$rel")"
    cp "$header" "$deps/include/$rel"
  done
echo "fill_deps: $deps ($(du -sh "$deps" | cut -f1)): $(find "$deps/include" -name '*.h' | wc -l) headers (pcre2.h, httplib.h" \
  "and those it includes), $soname ($runtime)"
