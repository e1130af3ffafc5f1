#!/usr/bin/env bash
# A throwaway Samba server on 127.0.0.1 to try the connector against, without a Windows
# file server: share "Share" on port 4455, service account CORP\scaidrive-svc.
#
#   deploy/dev/samba.sh start [dir]   # default dir: /tmp/scaidrive-samba; prints the settings
#   deploy/dev/samba.sh stop  [dir]
#
# Needs root (it creates the Unix account smbd maps the SMB user to) and Debian's samba
# and smbclient packages (apt-get install -y samba smbclient). Put files into <dir>/share,
# then chown -R scaidrive-svc <dir>/share so they are writable over SMB.
set -euo pipefail
cmd=${1:-start}
dir=${2:-/tmp/scaidrive-samba}
port=${SAMBA_PORT:-4455}
user=scaidrive-svc
pass=${SAMBA_PASSWORD:-Svc-pass1}

case "$cmd" in
start)
  command -v smbd >/dev/null || { echo "smbd not found: apt-get install -y samba smbclient" >&2; exit 1; }
  mkdir -p "$dir"/{share,private,lock,state,cache,pid,log,ncalrpc}
  cat >"$dir/smb.conf" <<CONF
[global]
workgroup = CORP
# A classic (NT4-style) domain controller of CORP, so accounts resolve as CORP\<name> through
# LSA, as on a Windows domain (identity mappings such as "CORP\alice" work).
netbios name = SCAIDRIVE-DEV
server role = classic primary domain controller
server signing = auto
smb ports = $port
interfaces = 127.0.0.1
bind interfaces only = yes
private dir = $dir/private
lock directory = $dir/lock
state directory = $dir/state
cache directory = $dir/cache
pid directory = $dir/pid
ncalrpc dir = $dir/ncalrpc
log file = $dir/log/smbd.log
passdb backend = tdbsam:$dir/private/passdb.tdb
server min protocol = SMB2_10
map to guest = never
load printers = no
disable spoolss = yes
[Share]
path = $dir/share
read only = no
vfs objects = acl_xattr
store dos attributes = yes
CONF
  id "$user" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$user"
  printf '%s\n%s\n' "$pass" "$pass" | smbpasswd -c "$dir/smb.conf" -s -a "$user" >/dev/null
  chown -R "$user" "$dir/share"
  smbd -s "$dir/smb.conf" -D
  for _ in $(seq 50); do
    smbclient -p "$port" //127.0.0.1/Share -U "CORP\\$user%$pass" -c ls >/dev/null 2>&1 && break
    sleep 0.2
  done
  smbclient -p "$port" //127.0.0.1/Share -U "CORP\\$user%$pass" -c ls >/dev/null
  echo "Samba ready: server_host 127.0.0.1, server_port $port, share_name Share, domain CORP,"
  echo "username $user, password $pass; files go in $dir/share"
  ;;
stop)
  if [ -f "$dir/pid/smbd-smb.conf.pid" ]; then kill "$(cat "$dir/pid/smbd-smb.conf.pid")" || true; fi
  pkill -f "smbd -s $dir/smb.conf" || true
  ;;
*)
  echo "usage: $0 start|stop [dir]" >&2
  exit 2
  ;;
esac
