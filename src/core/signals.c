/* signals.c: remove registered temp files and kill registered children on SIGTERM / SIGINT / SIGHUP, then re-raise (signals.h). */
#include "core/signals.h"

#include <signal.h>
#include <string.h>

#include "core/common.h"

static void (*g_hook)(int sig);

void s2d_set_signal_hook(void (*hook)(int sig)) { g_hook = hook; }

static void on_signal(int sig) {
    if (g_hook) g_hook(sig); /* async-signal-safe by contract */
    s2d_tmp_unlink_all(); /* unlink() only: async-signal-safe */
    s2d_children_kill_all(); /* kill() only */
    /* SA_RESETHAND restored the default action: this ends the process with the signal's status */
    raise(sig);
}

void s2d_signals_install(void) {
    static int installed;
    if (installed) return;
    installed = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
}
