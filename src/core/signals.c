/* signals.c: unlink tracked temp files on SIGTERM / SIGINT / SIGHUP, then re-raise (signals.h). */
#include "core/signals.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#define MAX_TRACKED 16

/* A slot is live while `used` is 1; the path is written before `used` is set, so the handler never reads a
 * half-written path. */
static char g_paths[MAX_TRACKED][4200];
static volatile sig_atomic_t g_used[MAX_TRACKED];
static int g_installed;

static void on_signal(int sig) {
    for (int i = 0; i < MAX_TRACKED; i++)
        if (g_used[i]) unlink(g_paths[i]);
    /* SA_RESETHAND restored the default action: this ends the process with the signal's status */
    raise(sig);
}

void s2d_signals_install(void) {
    if (g_installed) return;
    g_installed = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
}

void s2d_signals_track(const char *path) {
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (g_used[i]) continue;
        snprintf(g_paths[i], sizeof g_paths[i], "%s", path);
        g_used[i] = 1;
        return;
    }
    log_warn("signals: more than %d temp files at once; %s is not removed on a signal", MAX_TRACKED, path);
}

void s2d_signals_untrack(const char *path) {
    for (int i = 0; i < MAX_TRACKED; i++)
        if (g_used[i] && strcmp(g_paths[i], path) == 0) g_used[i] = 0;
}
