/* signals.h: SIGTERM / SIGINT / SIGHUP end the process without leaving temp files behind.
 *
 * When a launcher kills a job (mpirun after one rank aborts, Slurm at the time limit, Ctrl-C), die() does not
 * run, so atomic outputs would leave "<path>.tmp.<pid>" files. Paths tracked here are unlinked by the signal
 * handler, which then re-raises the signal with the default action (the exit status still says "killed by
 * SIGTERM"). The handler only calls unlink() and raise() (async-signal-safe); tracking is for the main thread. */
#pragma once

/* Installs the handler for SIGTERM, SIGINT and SIGHUP (once; later calls do nothing). */
void s2d_signals_install(void);
/* Adds / removes a path the handler must unlink (at most 16 at a time; more are ignored with a warning). */
void s2d_signals_track(const char *path);
void s2d_signals_untrack(const char *path);
