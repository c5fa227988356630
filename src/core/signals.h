/* signals.h: SIGTERM / SIGINT / SIGHUP end the process without leaving temp files behind.
 *
 * When a launcher kills a job (mpirun after one rank aborts, Slurm at the time limit, Ctrl-C), die() does not
 * run, so atomic outputs would leave "<path>.tmp.<pid>" files. The handler removes every temp file registered
 * with s2d_tmp_register (core/common.h; atomic_file and the HDF5 writers register theirs), then re-raises the
 * signal with the default action, so the exit status still says "killed by SIGTERM". Registered child processes
 * (core/subproc.h) are SIGKILLed first. */
#pragma once

/* Installs the handler for SIGTERM, SIGINT and SIGHUP (once; later calls do nothing). */
void s2d_signals_install(void);
/* Called first by the handler (NULL: none); it must be async-signal-safe. mpi/ installs one that names a rank
 * that is gone when the launcher ends the job because of it. */
void s2d_set_signal_hook(void (*hook)(int sig));
