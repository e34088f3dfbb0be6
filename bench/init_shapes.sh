#!/usr/bin/env bash
# What the run's init costs as a copy of the zygote, against the shapes that would
# avoid the copy (docs/architecture.md, "Fork server"). A C stand-in for a zygote (12 MiB
# of anonymous memory written, as a zygote with numpy has) makes a run R times in each
# shape; each run's program writes 470 of those pages (what a forked run's copies),
# then exits:
#   copy       today's: the init is a fork (a copy of the zygote's page tables), the
#              program a fork of the init (a second copy), and each copy is torn down
#              at its exit;
#   exec-init  the init shares the zygote's memory (clone CLONE_VM|CLONE_VFORK), forks
#              the program (the one copy) and execs a tiny static init that waits for
#              it: what making the init "a small exec'd program" would cost;
#   shared     the init shares the zygote's memory and never execs (it would run in
#              the zygote's address space for the run's whole life: not something a
#              zygote can allow, measured as the bound);
#   no-init    the program alone, forked from the zygote (the program as PID 1: what
#              the fork server must not do, measured as the floor).
# The shapes are interleaved in rounds; each one's CPU is the whole machine's, from
# /proc/stat. No namespaces are made: the figures are the memory's share only.
#
# Usage: bench/init_shapes.sh [-n R] [ROUNDS]   (default R 500, ROUNDS 6; needs cc
# and a static C library, libc6-dev)

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init init_shapes
n="${N:-500}"
if [[ "${1:-}" == -n ]]; then n=${2:?-n needs a count}; shift 2; fi
rounds=${1:-6}
command -v cc >/dev/null || die "no C compiler (cc)"

make_tmpdir
cat >"$tmp/tinyinit.c" <<'EOF'
#include <sys/wait.h>
#include <unistd.h>
int main(void) { int st; while (wait(&st) > 0) {} _exit(0); }
EOF
cat >"$tmp/shapes.c" <<EOF
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
static char *mem;
static const size_t memsz = 12 << 20;
static void program(void) {
    for (size_t i = 0; i < 470; i++) mem[i * 4096 * 5 % memsz] ^= 1;
    _exit(0);
}
static int exec_init(void *arg) {
    (void)arg;
    if (fork() == 0) program();
    char *argv[] = {"tinyinit", NULL};
    execve("$tmp/tinyinit", argv, NULL);
    _exit(127);
}
static int shared_init(void *arg) {
    (void)arg;
    pid_t p = fork();
    if (p == 0) program();
    int st;
    waitpid(p, &st, 0);
    _exit(0);
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int n = atoi(argv[2]);
    const char *shape = argv[1];
    mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *stack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || stack == MAP_FAILED) return 1;
    memset(mem, 1, memsz);
    for (int i = 0; i < n; i++) {
        pid_t p;
        if (!strcmp(shape, "copy")) {
            p = fork();
            if (p == 0) {
                pid_t q = fork();
                if (q == 0) program();
                int st;
                waitpid(q, &st, 0);
                _exit(0);
            }
        } else if (!strcmp(shape, "exec-init")) {
            p = clone(exec_init, stack + (1 << 16), CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
        } else if (!strcmp(shape, "shared")) {
            p = clone(shared_init, stack + (1 << 16), CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
        } else {
            p = fork();
            if (p == 0) program();
        }
        int st;
        if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
    }
    return 0;
}
EOF
cc -O2 -static -o "$tmp/tinyinit" "$tmp/tinyinit.c" || die "cannot link a static binary (libc6-dev)"
cc -O2 -o "$tmp/shapes" "$tmp/shapes.c"

busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
shapes=(copy exec-init shared no-init)
declare -A ticks=()
for shape in "${shapes[@]}"; do ticks[$shape]=0; done
for ((r = 0; r < rounds; r++)); do
    for shape in "${shapes[@]}"; do
        start=$(busy)
        "$tmp/shapes" "$shape" "$n" || die "$shape failed"
        ticks[$shape]=$((ticks[$shape] + $(busy) - start))
    done
done
hz=$(getconf CLK_TCK)
echo "CPU per run (ms), whole machine, $rounds rounds of $n; 12 MiB written in the zygote, 470 pages in each program"
for shape in "${shapes[@]}"; do
    awk -v s="$shape" -v t="${ticks[$shape]}" -v c="${ticks[copy]}" -v hz="$hz" -v runs="$((n * rounds))" 'BEGIN {
        printf "%-10s %6.2f ms  (%+.2f ms against copy)\n", s, t * 1000 / hz / runs, (t - c) * 1000 / hz / runs
    }'
done
