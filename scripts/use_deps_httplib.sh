# shellcheck shell=bash
# Sourced by scripts/test_gpu.sh before it configures a build: use_deps_httplib ROOT.
#
# `podkv serve` needs cpp-httplib, which Debian and Ubuntu ship as a header plus a compiled library
# (libcpp-httplib-dev and libcpp-httplib0.11). A GPU machine without them can use both unpacked into
# the ignored ROOT/.deps/ by scripts/fill_deps.sh on a machine that has apt: httplib.h with the
# OpenSSL, zlib and brotli headers it includes, the library as .deps/usr/lib/x86_64-linux-gnu/
# libcpp-httplib.so.0.11, and cpp-httplib.pc. At run time that library needs libssl.so.3 and
# libcrypto.so.3 (Ubuntu 24.04's libssl3t64: the t64 rename is about 32-bit time_t, on amd64 the
# sonames and ABI are libssl3's), libz.so.1 (zlib1g), libbrotlidec.so.1 and libbrotlienc.so.1
# (libbrotli1, which curl's libcurl4t64 depends on), libstdc++ with GLIBCXX_3.4.30 (GCC 12 or later)
# and glibc 2.34 or later.
# When the header and library are there, the machine has no cpp-httplib of its own, and the loader
# finds every library the carried one needs, this points the .pc file at .deps, links the
# library's unversioned name for the linker and puts the .pc on PKG_CONFIG_PATH. CMake then links
# podkv with the library's full path and writes its folder into the RUNPATH of the build tree's
# binaries, so podkv and podkv_tests load it from any shell (an exported LD_LIBRARY_PATH would
# reach only the commands of the sourcing script). Otherwise it does nothing; when a needed library
# is missing it says which, and podkv is built without serve, as without .deps.
use_deps_httplib() {
  local deps=$1/.deps/usr
  local lib=$deps/lib/x86_64-linux-gnu
  local so missing
  so=$(find "$lib" -maxdepth 1 -type f -name 'libcpp-httplib.so.*' 2>/dev/null | head -1)
  # The machine's own cpp-httplib, if any: looked up without .deps' folder (use_deps_pcre2 may have put it
  # on PKG_CONFIG_PATH already, and the carried .pc sits there too).
  local own_path
  own_path=$(echo ":${PKG_CONFIG_PATH:-}:" | sed "s|:$lib/pkgconfig:|:|g; s|^:*||; s|:*$||")
  [ -f "$deps/include/httplib.h" ] && [ -n "$so" ] && ! PKG_CONFIG_PATH=$own_path pkg-config --exists cpp-httplib 2>/dev/null ||
    return 0
  missing=$(ldd "$so" 2>&1 | awk '/not found/ { printf "%s%s", sep, $1; sep = ", " }')
  if [ -n "$missing" ]; then
    echo "use_deps_httplib: not using .deps/: this machine lacks $missing (needed by $(basename "$so")); podkv serve is not built" >&2
    return 0
  fi
  sed -i "s|^prefix=.*|prefix=$deps|" "$lib/pkgconfig/cpp-httplib.pc"
  ln -sf "$(basename "$so")" "$lib/libcpp-httplib.so"
  case ":${PKG_CONFIG_PATH:-}:" in
    *":$lib/pkgconfig:"*) ;;
    *) export PKG_CONFIG_PATH="$lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" ;;
  esac
}
