#include "core/timer.h"

#include <time.h>

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double g_t0 = -1.0;

double time_since_start(void) {
    double now = time_now();
    if (g_t0 < 0) g_t0 = now;
    return now - g_t0;
}
