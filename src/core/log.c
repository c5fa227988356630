#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/timer.h"

static int g_level = -1;

static log_level level_from_env(void) {
    const char *s = getenv("S2D_LOG");
    if (!s || !*s) return LOG_INFO;
    if (strcmp(s, "debug") == 0) return LOG_DEBUG;
    if (strcmp(s, "warn") == 0) return LOG_WARN;
    if (strcmp(s, "quiet") == 0) return LOG_QUIET;
    return LOG_INFO;
}

log_level log_get_level(void) {
    if (g_level < 0) g_level = (int)level_from_env();
    return (log_level)g_level;
}

void log_msg(log_level level, const char *fmt, ...) {
    if (level < log_get_level()) return;
    static const char *names[] = {"debug", "info", "warn", ""};
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[s2d %8.2fs r%d %s] %s\n", time_since_start(), s2d_rank(), names[level], msg);
}
