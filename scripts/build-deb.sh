#!/bin/bash
# make deb: builds the Debian package (debian/) with the standard tools, from the checkout's files
# (what git tracks, plus new files it does not ignore: no .venv, no caches), in build/deb/, and
# checks it with lintian. Installs the build dependencies first when any is missing.
# The package lands in dist/: dist/netwatchd_<version>_all.deb.
set -euo pipefail
cd "$(dirname "$0")/.."

missing_tools=()
for p in build-essential dpkg-dev lintian; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing_tools+=("$p")
done
# Build-Depends as debian/control writes it (one field, continued over indented lines)
build_depends=$(awk '/^Build-Depends:/ { f = 1; sub(/^Build-Depends:/, ""); print; next }
                     f && /^[ \t]/  { print; next } { f = 0 }' debian/control | tr -s ' \n\t' ' ')
if ((${#missing_tools[@]})) || ! dpkg-checkbuilddeps >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "deb: need root to install the build dependencies" >&2; exit 1; }
  echo "deb: installing the build dependencies"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends build-essential dpkg-dev lintian >/dev/null
  apt-get satisfy -y -qq --no-install-recommends "$build_depends" >/dev/null
fi

version=$(dpkg-parsechangelog -S Version)
python_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' netwatchd/__init__.py)
if [ "$version" != "$python_version" ]; then
  echo "deb: debian/changelog says $version, netwatchd/__init__.py says $python_version" >&2
  exit 1
fi

work=build/deb
src=$work/netwatchd-$version
rm -rf "$work"
mkdir -p "$src" dist
if [ -d .git ] || [ -f .git ]; then
  while IFS= read -r -d '' f; do   # tracked files deleted in the checkout are not copied
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
  done < <(git ls-files -z --cached --others --exclude-standard) | tar --null -T - -cf - | tar -xf - -C "$src"
else
  tar --exclude=./.venv --exclude=./build --exclude=./dist --exclude=__pycache__ --exclude='*.egg-info' \
      --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -xf - -C "$src"
fi

t0=$(date +%s)
# The distribution's tools only: a python3 of pyenv or a venv earlier on PATH is not Debian's.
(cd "$src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" LANG=C.UTF-8 \
   dpkg-buildpackage -us -uc --build=source,all) > "$work/build.log" 2>&1 || {
  tail -40 "$work/build.log" >&2; echo "deb: dpkg-buildpackage failed (log: $work/build.log)" >&2; exit 1; }
deb=netwatchd_${version}_all.deb
cp "$work/$deb" dist/
echo "deb: built dist/$deb in $(( $(date +%s) - t0 ))s"

echo "deb: lintian"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" LANG=C.UTF-8 lintian --fail-on error,warning --info --display-info --pedantic "$work"/netwatchd_"${version}"_*.changes
echo "deb: lintian clean (no error, no warning)"
