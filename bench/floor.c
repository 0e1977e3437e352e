/*
 * floor.c - the "physical limit" supervisor used as a baseline by
 * bench/supervisors.py.
 *
 * usage: floor N PATH [ARG...]
 *
 * posix_spawn()s N copies of PATH ARG... as fast as it can, then loops on
 * waitpid() and re-spawns any child that dies, with no delay and no
 * bookkeeping beyond a pid array.  On SIGTERM/SIGINT it sends SIGTERM to
 * every child, reaps them all and exits 0.
 *
 * It deliberately does nothing a real supervisor does (no logging, no state
 * machine, no config, no status API), so its numbers are a floor for
 * start-up time, memory and respawn latency on this machine.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t stop_requested = 0;

static void on_term(int sig) {
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s N PATH [ARG...]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    if (n <= 0) {
        fprintf(stderr, "floor: bad N\n");
        return 2;
    }
    char *path = argv[2];
    char **child_argv = &argv[2];

    pid_t *pids = calloc((size_t)n, sizeof(pid_t));
    if (!pids) {
        perror("calloc");
        return 1;
    }

    /* No SA_RESTART: waitpid() must return EINTR so we notice SIGTERM. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    for (long i = 0; i < n; i++) {
        int rc = posix_spawn(&pids[i], path, NULL, NULL, child_argv, environ);
        if (rc != 0) {
            fprintf(stderr, "floor: posix_spawn: %s\n", strerror(rc));
            pids[i] = 0;
        }
    }

    while (!stop_requested) {
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECHILD) {
                /* Everything failed to spawn; avoid a busy loop. */
                sleep(1);
                continue;
            }
            perror("waitpid");
            break;
        }
        for (long i = 0; i < n; i++) {
            if (pids[i] == p) {
                if (stop_requested) {
                    pids[i] = 0;
                    break;
                }
                int rc = posix_spawn(&pids[i], path, NULL, NULL, child_argv, environ);
                if (rc != 0) {
                    fprintf(stderr, "floor: respawn: %s\n", strerror(rc));
                    pids[i] = 0;
                }
                break;
            }
        }
    }

    for (long i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    free(pids);
    return 0;
}
