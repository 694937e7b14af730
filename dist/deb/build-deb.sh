#!/usr/bin/env bash
# dist/deb/build-deb.sh [TARGET]: a Debian package of both programs, made with
# dpkg-deb from a staged tree (nothing else needed). TARGET (default
# x86_64-unknown-linux-musl) is built with dist/build.sh; the static musl binaries run on
# any Debian release of that architecture. The last line printed is the .deb's path.
#
# It installs /usr/sbin/certrelayd, /usr/bin/certrelay, the system unit certrelayd.service
# and the user unit certrelay.service, and /etc/certrelay/{main.cf,master.cf,
# relay_clientcerts} as conffiles; postinst makes the `certrelay` system account
# (mail_owner) and /var/spool/certrelay (its own, 0700); purge removes both.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${1:-x86_64-unknown-linux-musl}
case "$target" in
  x86_64-*) arch=amd64 ;;
  aarch64-*) arch=arm64 ;;
  armv7-*) arch=armhf ;;
  *) echo "dist/deb/build-deb.sh: no Debian architecture known for $target" >&2; exit 2 ;;
esac
bin=$(dist/build.sh "$target" | tail -n 1)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' shell-server/Cargo.toml | head -n 1)-1

out=$PWD/target/deb
stage=$out/certrelay_${version}_$arch
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/sbin" "$stage/usr/bin" "$stage/etc/certrelay" \
  "$stage/lib/systemd/system" "$stage/usr/lib/systemd/user" \
  "$stage/usr/share/doc/certrelay"
install -m 0755 "$bin/certrelayd" "$stage/usr/sbin/certrelayd"
install -m 0755 "$bin/certrelay" "$stage/usr/bin/certrelay"
install -m 0644 dist/systemd/certrelayd.service "$stage/lib/systemd/system/"
install -m 0644 dist/systemd/certrelay.service "$stage/usr/lib/systemd/user/"
for f in main.cf master.cf relay_clientcerts; do
  install -m 0644 "dist/deb/etc/$f" "$stage/etc/certrelay/$f"
  echo "/etc/certrelay/$f" >>"$stage/DEBIAN/conffiles"
done
install -m 0644 examples/laptop/main.cf "$stage/usr/share/doc/certrelay/laptop-main.cf"
install -m 0755 dist/deb/postinst dist/deb/postrm "$stage/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: certrelay
Version: $version
Architecture: $arch
Maintainer: certrelay developers <certrelay@example.invalid>
Depends: adduser
Section: mail
Priority: optional
Installed-Size: $size
Homepage: https://example.invalid/certrelay
Description: mail relay for laptops with TLS client certificates
 certrelayd relays mail for clients whose TLS client certificate fingerprint is listed
 (Postfix's permit_tls_clientcerts / relay_clientcerts recipe), with a durable spool and
 onward delivery; certrelay is the laptop side: a sendmail-compatible entry point and a
 local queue delivering through the relay with the laptop's certificate. Both read
 Postfix's main.cf and master.cf parameter names.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/" >&2
rm -rf "$stage"
echo "$out/certrelay_${version}_$arch.deb"
