#!/usr/bin/env bash
# A multi-host test lab on one machine: a "head" host and nodes node1..nodeN,
# each with its own network, UTS and mount namespaces, running sshd, munged
# and Slurm (slurmctld on head, slurmd on the nodes). See README.md here.
#
#   lab.sh up [N]                 build head + node1..nodeN (default 3)
#   lab.sh run HOST [--] CMD...   run CMD inside HOST (env and cwd kept)
#   lab.sh down                   remove everything `up` made (idempotent)
#   lab.sh addr HOST | hosts | status
#
# Must run as root. State lives in $RPARALLEL_LAB_DIR (default
# /run/rparallel-lab); namespaces are named rplab-*.
set -euo pipefail
umask 022

SELF=$(readlink -f "${BASH_SOURCE[0]}")
# The project root must stay visible inside every host, even under /tmp.
ROOT=$(cd "$(dirname "$SELF")/../.." && pwd -P)
LAB=$(realpath -m "${RPARALLEL_LAB_DIR:-/run/rparallel-lab}")
PREFIX=rplab-
BRIDGE_NS=${PREFIX}bridge
NET=10.213.0            # head = .1, nodeK = .(1+K); /24, no default route
MAX_NODES=16
MARKER=.rparallel-lab   # proves a directory is ours before `down` deletes it
DAEMON_PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Open MPI refuses to run as root without these. They are needed by mpiexec
# itself (the local process); the orted/ranks it starts over ssh do not check
# them, but the sshd config also sets them so a remote mpiexec works too.
OMPI_ENV=(
    OMPI_ALLOW_RUN_AS_ROOT=1
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
)

die() { echo "lab.sh: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }

# wait_until TIMEOUT WHAT CMD...: poll CMD every 0.1 s, at most TIMEOUT s.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local end=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.1
    done
}

host_ip() {
    case $1 in
        head) echo "$NET.1" ;;
        node[1-9]*) echo "$NET.$((1 + ${1#node}))" ;;
        *) return 1 ;;
    esac
}

lab_hosts() { cat "$LAB/hosts.list"; }

# seconds since START (an $EPOCHREALTIME value), as "1.23"
elapsed() {
    local now=${EPOCHREALTIME//[!0-9]/}  # the radix may be "," in some locales
    local us=$((10#$now - 10#${1//[!0-9]/}))
    printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000))
}

is_up() { [[ -f $LAB/up ]]; }

# True unless we are inside a lab host: compared with the namespaces `up`
# ran in (recorded in outside-ns), else with the lab's own namespaces.
outside_lab() {
    if [[ -f $LAB/outside-ns ]]; then
        [[ $(readlink /proc/self/ns/net /proc/self/ns/mnt) == "$(cat "$LAB/outside-ns")" ]]
    else
        if lab_ns_ids | grep -qxF -f <(own_ns_ids); then return 1; fi
    fi
}

require_host() {
    is_up || die "no lab is up (state dir $LAB)"
    grep -qx -- "$1" "$LAB/hosts.list" || die "no such lab host: $1 (hosts: $(lab_hosts | tr '\n' ' '))"
}

# in_host HOST CMD...: run CMD in all three namespaces of HOST. Entering the
# mount namespace resets the cwd to /.
in_host() {
    local h=$1
    shift
    nsenter --net="/run/netns/$PREFIX$h" --uts="$LAB/ns/$h.uts" \
        --mount="$LAB/ns/$h.mnt" -- "$@"
}

# Start a daemon inside HOST with a clean environment; it forks itself away,
# and its stdio goes to a log so it never holds the caller's pipes open.
start_daemon() {
    local h=$1 logfile=$2
    shift 2
    in_host "$h" env -i PATH="$DAEMON_PATH" LANG=C.UTF-8 "$@" \
        </dev/null >>"$logfile" 2>&1
}

# ---------------------------------------------------------------------------
# up

write_configs() {
    local n=$1 h
    mkdir -p "$LAB"/{ns,etc,ssh,sshd,munge,log,slurm/state,slurm/spool,slurm/etc}
    chmod 700 "$LAB/ssh" "$LAB/sshd" "$LAB/munge"

    # Names resolve to lab addresses only (never 127.0.1.1), in every host.
    {
        echo "127.0.0.1 localhost"
        while read -r h; do echo "$(host_ip "$h") $h"; done <"$LAB/hosts.list"
    } >"$LAB/etc/hosts"

    # root's ~/.ssh in every host: one key, trusted everywhere, no prompts.
    ssh-keygen -q -t ed25519 -N '' -C rparallel-lab -f "$LAB/ssh/id_ed25519"
    cp "$LAB/ssh/id_ed25519.pub" "$LAB/ssh/authorized_keys"
    cat >"$LAB/ssh/config" <<'EOF'
Host *
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ConnectTimeout 10
EOF
    chmod 600 "$LAB/ssh/authorized_keys" "$LAB/ssh/config"

    ssh-keygen -q -t ed25519 -N '' -C rparallel-lab -f "$LAB/sshd/ssh_host_ed25519_key"
    # ListenAddress and PidFile are per host, given on the command line.
    cat >"$LAB/sshd/sshd_config" <<EOF
HostKey $LAB/sshd/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
X11Forwarding no
# Launchers open many connections at once.
MaxStartups 100:30:200
MaxSessions 100
# OpenSSH 9's scp speaks SFTP.
Subsystem sftp internal-sftp
# So that mpiexec also works when started on a node over ssh; a UTF-8
# locale as PAM would give (UsePAM is off: root's password is "*").
SetEnv ${OMPI_ENV[*]} LANG=C.UTF-8
EOF

    # One munge key shared by all hosts; munged insists on 0400.
    head -c 1024 /dev/urandom >"$LAB/munge/munge.key"
    chmod 400 "$LAB/munge/munge.key"

    # Slurm: the plugin choices avoid cgroups (not usable here); %n gives
    # each slurmd on this one machine its own spool/pid/log.
    cat >"$LAB/slurm/etc/slurm.conf" <<EOF
ClusterName=rplab
SlurmctldHost=head
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Trust CPUs= below rather than the 2 real cores.
SlurmdParameters=config_overrides
# Otherwise batch jobs start about 3 s late.
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled.
KillWait=2
InactiveLimit=0
StateSaveLocation=$LAB/slurm/state
SlurmctldPidFile=$LAB/run/head/slurmctld.pid
SlurmctldLogFile=$LAB/log/slurmctld.log
SlurmdSpoolDir=$LAB/slurm/spool/%n
SlurmdPidFile=$LAB/run/%n/slurmd.pid
SlurmdLogFile=$LAB/log/slurmd-%n.log
NodeName=node[1-$n] CPUs=32 State=UNKNOWN
PartitionName=lab Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

make_network() {
    local h ip
    ip netns add "$BRIDGE_NS"
    ip -n "$BRIDGE_NS" link set lo up
    ip -n "$BRIDGE_NS" link add br0 type bridge forward_delay 0
    ip -n "$BRIDGE_NS" link set br0 up
    while read -r h; do
        ip=$(host_ip "$h")
        ip netns add "$PREFIX$h"
        ip -n "$PREFIX$h" link set lo up
        # Create the pair directly in its namespaces: nothing touches the
        # root namespace, which gets no lab address and no route to the lab.
        ip -n "$BRIDGE_NS" link add "v-$h" type veth peer name eth0 netns "$PREFIX$h"
        ip -n "$BRIDGE_NS" link set "v-$h" master br0 up
        # No IPv6 link-local address: only the lab IPv4 address to choose.
        ip -n "$PREFIX$h" link set eth0 addrgenmode none
        ip -n "$PREFIX$h" addr add "$ip/24" dev eth0
        ip -n "$PREFIX$h" link set eth0 up
    done <"$LAB/hosts.list"
}

# Mountpoints that may be missing on the real filesystem: create them and
# remember it, so that `down` can remove them again.
ensure_mountpoint() {
    if [[ ! -e $1 ]]; then
        mkdir -m "$2" "$1"
        echo "$1" >>"$LAB/created-dirs"
    fi
}

# Runs (as `lab.sh __setup-host HOST`) inside the new mount and UTS
# namespaces that `unshare` pins in $LAB/ns; sets up HOST's private view.
setup_host() {
    local h=$1 tmpfs p fd i
    # Never rename the machine itself: only a UTS namespace of our own.
    [[ $(readlink /proc/self/ns/uts) != "$(readlink /proc/$PPID/ns/uts)" ]] ||
        die "setup of $h: not in a new UTS namespace; refusing to change the machine's hostname"
    hostname "$h"
    # The copied mount tree still holds the other hosts' pinned namespaces;
    # drop them here so only the root namespace keeps them alive.
    umount -l "$LAB/ns"
    # (An empty /run/netns, not the stale files under the root one, which
    # would make `ip addr` complain.)
    if mountpoint -q /run/netns; then
        umount -l /run/netns
        mount -t tmpfs -o mode=755,size=64k lab-netns /run/netns
    fi

    # Private /tmp and /dev/shm. Paths under them that must stay shared (the
    # project root, the state dir) are opened first and bound back into the
    # fresh tmpfs through /proc/self/fd (their old path is hidden by then).
    for tmpfs in /tmp /dev/shm; do
        local keep=() fds=()
        for p in "$ROOT" "$LAB"; do
            if [[ $p == "$tmpfs"/* ]]; then
                exec {fd}<"$p"
                keep+=("$p")
                fds+=("$fd")
            fi
        done
        mount -t tmpfs -o mode=1777,nosuid,nodev "lab-$h" "$tmpfs"
        for i in "${!keep[@]}"; do
            mkdir -p "${keep[i]}"
            mount --no-canonicalize --bind "/proc/self/fd/${fds[i]}" "${keep[i]}"
            fd=${fds[i]}
            exec {fd}<&-
        done
    done

    mount --bind "$LAB/etc/hosts" /etc/hosts
    mount --bind "$LAB/slurm/etc" /etc/slurm
    mount --bind "$LAB/ssh" /root/.ssh
    mount --bind "$LAB/run/$h/munge" /run/munge
}

make_hosts() {
    local h
    ensure_mountpoint /root/.ssh 700
    ensure_mountpoint /run/munge 755
    ensure_mountpoint /run/sshd 755     # sshd's privilege-separation dir
    ensure_mountpoint /etc/slurm 755
    # `unshare --mount=FILE` needs FILE on a private mount.
    mount --bind "$LAB/ns" "$LAB/ns"
    mount --make-private "$LAB/ns"
    while read -r h; do
        mkdir -p "$LAB/run/$h/munge" "$LAB/slurm/spool/$h"
        touch "$LAB/ns/$h.mnt" "$LAB/ns/$h.uts"
        make_host_ns "$h"
    done <"$LAB/hosts.list"
}

is_nsfs() { [[ $(stat -f -L -c %T "$1" 2>/dev/null) == nsfs ]]; }

# Create HOST's mount and UTS namespaces, pinned by bind mounts in $LAB/ns.
# The kernel refuses to pin a mount namespace whose id is lower than the
# caller's ("namespace loop": EINVAL). Mount namespace ids come from per-CPU
# batches (seen on Linux 6.18), so when `up` itself runs in a non-initial
# mount namespace (a container) a new namespace can get a lower id, at
# random. Then retry on each CPU in turn: the CPU that made ours has higher
# ids left. (In the initial namespace, id 4 or so, this never happens.)
make_host_ns() {
    local h=$1 cpu
    local -a unshare_cmd=(unshare --mount="$LAB/ns/$h.mnt" --uts="$LAB/ns/$h.uts"
        --propagation private -- "$SELF" __setup-host "$h")
    "${unshare_cmd[@]}" 2>"$LAB/log/unshare-$h.log" && return 0
    for cpu in $(seq 0 $(($(nproc --all) - 1))); do
        # Only a failed pin is worth retrying, not a failed setup.
        is_nsfs "$LAB/ns/$h.mnt" && break
        if is_nsfs "$LAB/ns/$h.uts"; then umount "$LAB/ns/$h.uts"; fi
        taskset -c "$cpu" "${unshare_cmd[@]}" 2>>"$LAB/log/unshare-$h.log" && return 0
    done
    cat "$LAB/log/unshare-$h.log" >&2
    return 1
}

start_daemons() {
    local h ip
    while read -r h; do
        ip=$(host_ip "$h")
        start_daemon "$h" "$LAB/log/$h-munged.log" /usr/sbin/munged \
            --key-file="$LAB/munge/munge.key" --log-file="$LAB/log/$h-munged.log" \
            --seed-file="$LAB/run/$h/munged.seed" --num-threads=4
        start_daemon "$h" "$LAB/log/$h-sshd.log" /usr/sbin/sshd \
            -f "$LAB/sshd/sshd_config" -E "$LAB/log/$h-sshd.log" \
            -o PidFile="$LAB/run/$h/sshd.pid" \
            -o ListenAddress="$ip" -o ListenAddress=127.0.0.1
    done <"$LAB/hosts.list"
    # Slurm talks through munge: make sure every munged is answering first.
    while read -r h; do
        wait_until 10 "munged on $h" in_host "$h" test -S /run/munge/munge.socket.2
    done <"$LAB/hosts.list"
    start_daemon head "$LAB/log/slurmctld.log" /usr/sbin/slurmctld
    while read -r h; do
        [[ $h == head ]] && continue
        start_daemon "$h" "$LAB/log/slurmd-$h.log" /usr/sbin/slurmd -N "$h"
    done <"$LAB/hosts.list"
}

# True when every node is idle in sinfo.
slurm_ready() {
    local states
    states=$(in_host head sinfo -h -N -o '%T') || return 1
    [[ -n $states ]] && ! grep -qv '^idle$' <<<"$states"
}

wait_ready() {
    local h ip n
    while read -r h; do
        ip=$(host_ip "$h")
        wait_until 15 "sshd on $h" in_host head timeout 5 bash -c "exec 3<>/dev/tcp/$ip/22"
    done <"$LAB/hosts.list"
    # One real login per host proves keys, names and config together.
    while read -r h; do
        wait_until 15 "ssh login to $h" in_host head timeout 10 ssh "$h" true
    done <"$LAB/hosts.list"
    n=$(($(wc -l <"$LAB/hosts.list") - 1))
    wait_until 30 "all $n Slurm nodes idle" slurm_ready
    # slurmctld runs its first scheduling cycle ~3 s after it starts; until
    # then an sbatch waits for it (~2.6 s instead of ~0.65 s).
    wait_until 15 "slurmctld's first scheduling cycle" slurm_scheduling
}

slurm_scheduling() {
    local cycles
    cycles=$(in_host head sdiag | awk '/^Main schedule/ {m = 1} m && /Total cycles:/ {print $3; exit}')
    ((${cycles:-0} > 0))
}

show_logs() {
    local f
    for f in "$LAB"/log/*.log; do
        [[ -s $f ]] || continue
        echo "---- ${f#"$LAB"/} (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
}

on_up_exit() {
    local rc=$?
    trap - EXIT
    ((rc == 0)) && return
    log "up failed (status $rc)"
    [[ -d $LAB/log ]] && show_logs
    if [[ ${RPARALLEL_LAB_KEEP:-} == 1 ]]; then
        log "RPARALLEL_LAB_KEEP=1: leaving the partial lab; run 'lab.sh down' later"
    else
        log "removing the partial lab"
        cmd_down || true
    fi
    exit "$rc"
}

cmd_up() {
    local n=${1:-3} i t t0=$EPOCHREALTIME
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_NODES)); then
        die "up: N must be 1..$MAX_NODES, got '$n'"
    fi
    [[ $LAB != *[[:space:]]* ]] || die "state dir must not contain whitespace: $LAB"
    is_up && die "a lab is already up ($LAB); run 'lab.sh down' first"
    if [[ -e $LAB ]] && [[ -n $(ls -A "$LAB") ]]; then
        die "$LAB exists (a partial lab?); run 'lab.sh down' first"
    fi
    if ip netns list | grep -q "^$PREFIX"; then
        die "namespaces $PREFIX* exist (another lab?); run 'lab.sh down' first"
    fi
    for t in ip nsenter unshare ssh-keygen /usr/sbin/sshd /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd sinfo; do
        command -v "$t" >/dev/null || die "missing $t (apt-get install iproute2 util-linux openssh-server munge slurmd slurmctld slurm-client)"
    done

    mkdir -p "$LAB"
    touch "$LAB/$MARKER"
    readlink /proc/self/ns/net /proc/self/ns/mnt >"$LAB/outside-ns"
    trap on_up_exit EXIT
    trap 'exit 130' INT TERM HUP
    # Remember whether /run/netns was a mount before `ip netns` made it one.
    if mountpoint -q /run/netns 2>/dev/null; then touch "$LAB/netns-was-mounted"; fi
    {
        echo head
        for ((i = 1; i <= n; i++)); do echo "node$i"; done
    } >"$LAB/hosts.list"

    write_configs "$n"
    make_network
    make_hosts
    start_daemons
    wait_ready
    touch "$LAB/up"
    trap - EXIT INT TERM HUP
    log "up: head + $n nodes in $(elapsed "$t0") s (state $LAB)"
}

# ---------------------------------------------------------------------------
# down

# Namespace ids ("net:[123]") of the lab: every rplab-* network namespace
# plus the pinned mount/UTS namespaces in the state dir.
lab_ns_ids() {
    local name f
    for name in $(ip netns list 2>/dev/null | awk -v p="$PREFIX" 'index($1, p) == 1 {print $1}'); do
        is_nsfs "/run/netns/$name" || continue
        echo "net:[$(stat -L -c %i "/run/netns/$name")]"
    done
    for f in "$LAB"/ns/*.mnt "$LAB"/ns/*.uts; do
        is_nsfs "$f" || continue
        echo "${f##*.}:[$(stat -L -c %i "$f")]"
    done
}

own_ns_ids() { readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts; }

# PIDs of processes in any lab namespace (never by name). Our own namespaces
# (checked to be outside the lab) are excluded explicitly, as a guard against
# ever killing everything. One `find` reads every /proc/PID/ns link: a
# readlink per process is too slow.
lab_pids() {
    local ids
    ids=$(lab_ns_ids | grep -vxF -f <(own_ns_ids)) || return 0
    {
        find /proc/[0-9]*/ns/net /proc/[0-9]*/ns/mnt /proc/[0-9]*/ns/uts \
            -maxdepth 0 -printf '%p %l\n' 2>/dev/null || true  # races with exits
    } | awk -v ids="$ids" -v self="$$" -v me="$BASHPID" '
        BEGIN { n = split(ids, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        ($2 in want) { split($1, p, "/"); if (p[3] != self && p[3] != me) print p[3] }' |
        sort -un
}

kill_lab_processes() {
    local pids end_term=$((SECONDS + 2)) end_kill=$((SECONDS + 7))
    while pids=$(lab_pids) && [[ -n $pids ]]; do
        if ((SECONDS < end_term)); then
            # shellcheck disable=SC2086  # one PID per word
            kill -TERM $pids 2>/dev/null || true
        elif ((SECONDS < end_kill)); then
            # slurmstepd and srun ignore SIGTERM.
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        else
            log "processes survived SIGKILL: $(echo "$pids" | tr '\n' ' ')"
            return 1
        fi
        sleep 0.1
    done
}

# Mount points at or under $LAB in the root namespace, deepest first.
lab_mounts() {
    awk -v lab="$LAB" '$5 == lab || index($5, lab "/") == 1 {print $5}' /proc/self/mountinfo |
        sort -r
}

cmd_down() {
    local ok=0 m name d t0=$EPOCHREALTIME
    outside_lab || die "down: run it from outside the lab (it would kill its own caller)"
    kill_lab_processes || ok=1
    while read -r m; do
        [[ -n $m ]] && { umount "$m" 2>/dev/null || umount -l "$m" || ok=1; }
    done < <(lab_mounts)
    for name in $(ip netns list 2>/dev/null | awk -v p="$PREFIX" 'index($1, p) == 1 {print $1}'); do
        ip netns delete "$name" || ok=1
    done
    # Undo what `ip netns add` did to /run/netns, if nothing else uses it.
    if [[ -d $LAB && ! -e $LAB/netns-was-mounted ]] && mountpoint -q /run/netns 2>/dev/null &&
        [[ -z $(ls -A /run/netns) ]]; then
        if umount /run/netns; then rmdir /run/netns || true; fi
    fi
    if [[ -f $LAB/created-dirs ]]; then
        while read -r d; do rmdir "$d" 2>/dev/null || true; done <"$LAB/created-dirs"
    fi
    if [[ -e $LAB ]]; then
        if [[ -n $(lab_mounts) ]]; then
            log "still mounted under $LAB; not removing it"
            ok=1
        elif [[ -e $LAB/$MARKER ]]; then
            rm -rf --one-file-system "$LAB"
        else
            rmdir "$LAB" 2>/dev/null || log "$LAB is not a lab state dir; left alone"
        fi
    fi
    ((ok == 0)) || die "down: could not remove everything"
    log "down in $(elapsed "$t0") s"
}

# ---------------------------------------------------------------------------
# run, addr, hosts, status

cmd_run() {
    local h=${1:-}
    [[ -n $h ]] || die "usage: lab.sh run HOST [--] CMD [ARGS...]"
    shift
    [[ ${1:-} == -- ]] && shift
    require_host "$h"
    outside_lab || die "run: already inside a lab host ($(hostname)); use ssh to reach the others"
    (($#)) || set -- "${SHELL:-/bin/bash}"
    export "${OMPI_ENV[@]}"
    # Keep the caller's cwd (nsenter --wd would resolve it in the root mount
    # namespace); exec all the way so status and signals pass through.
    # shellcheck disable=SC2016  # expanded by the inner bash
    exec nsenter --net="/run/netns/$PREFIX$h" --uts="$LAB/ns/$h.uts" \
        --mount="$LAB/ns/$h.mnt" -- \
        /bin/bash -c 'cd -- "$1" || exit 125; shift; exec "$@"' lab-run "$PWD" "$@"
}

cmd_status() {
    if is_up; then
        local h down=() outside=0
        outside_lab && outside=1
        while read -r h; do
            # (Inside a lab host /run/netns is empty.)
            ((outside == 0)) || [[ -e /run/netns/$PREFIX$h ]] || down+=("$h(netns)")
            pid_alive "$LAB/run/$h/sshd.pid" || down+=("$h(sshd)")
            pid_alive "$LAB/run/$h/munge/munged.pid" || down+=("$h(munged)")
            if [[ $h == head ]]; then
                pid_alive "$LAB/run/head/slurmctld.pid" || down+=("head(slurmctld)")
            else
                pid_alive "$LAB/run/$h/slurmd.pid" || down+=("$h(slurmd)")
            fi
        done <"$LAB/hosts.list"
        if ((${#down[@]})); then
            echo "degraded: $LAB; not running: ${down[*]}"
            return 1
        fi
        echo "up: $(lab_hosts | tr '\n' ' ')(state $LAB)"
    elif [[ -e $LAB ]] || ip netns list 2>/dev/null | grep -q "^$PREFIX"; then
        echo "partial: leftovers of a lab ($LAB); run 'lab.sh down'"
        return 1
    else
        echo "down"
        return 3
    fi
}

pid_alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

usage() {
    sed -n '6,10s/^# \{0,1\}//p' "$SELF" >&2
    exit 2
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        up | down | __setup-host) ((EUID == 0)) || die "$cmd: must run as root" ;;
    esac
    case $cmd in
        up) cmd_up "$@" ;;
        down) cmd_down ;;
        run) cmd_run "$@" ;;
        addr)
            [[ $# == 1 ]] || die "usage: lab.sh addr HOST"
            require_host "$1"
            host_ip "$1"
            ;;
        hosts)
            is_up || die "no lab is up (state dir $LAB)"
            lab_hosts
            ;;
        status) cmd_status ;;
        __setup-host) setup_host "$@" ;;
        *) usage ;;
    esac
}

main "$@"
