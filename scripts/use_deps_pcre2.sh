# Sourced by the GPU-machine scripts (test_gpu.sh, train_long_model.sh, tuning_gpu.sh)
# before they configure a build: use_deps_pcre2 ROOT.
#
# A GPU machine without libpcre2-dev (the tokenizers' regexes need PCRE2) can use the package's
# header and pkg-config file unpacked on a machine that has apt, into the ignored ROOT/.deps/:
#   apt-get download libpcre2-dev && dpkg -x libpcre2-dev_*.deb /tmp/p &&
#   mkdir -p .deps/usr/include .deps/usr/lib/x86_64-linux-gnu/pkgconfig &&
#   cp /tmp/p/usr/include/pcre2.h .deps/usr/include/ &&
#   cp /tmp/p/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc .deps/usr/lib/x86_64-linux-gnu/pkgconfig/
# When that header is there, the machine has the library (libpcre2-8.so.0) but not the system
# header, this points the .pc file at .deps, links the machine's library beside it and puts it on
# PKG_CONFIG_PATH. Otherwise it does nothing. scripts/fill_deps.sh fills .deps/ with these steps and
# cpp-httplib's files, whose .pc lands in the same folder: a script that builds podkv there sources
# scripts/use_deps_httplib.sh after this one, or the build finds a cpp-httplib without its header.
use_deps_pcre2() {
  local deps=$1/.deps/usr
  [ -f "$deps/include/pcre2.h" ] && [ -e /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0 ] && [ ! -f /usr/include/pcre2.h ] ||
    return 0
  sed -i "s|^prefix=.*|prefix=$deps|" "$deps/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc"
  ln -sf /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0 "$deps/lib/x86_64-linux-gnu/libpcre2-8.so"
  export PKG_CONFIG_PATH="$deps/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
}
