/* fault_point.c: see fault_point.h (compiled to nothing outside the sanitizer build). */
#include "core/fault_point.h"

#ifdef S2D_FAULT_POINTS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/lsan_interface.h>

static long points_reached;
static long fail_at = -2; /* -2: S2D_FAULT_AT not read yet; -1: off; 0: count; N: fail the Nth point */

static void print_count(void) { fprintf(stderr, "s2d: fault points reached: %ld\n", points_reached); }

bool fault_point(const char *site, s2d_err *err) {
    if (fail_at == -2) {
        const char *v = getenv("S2D_FAULT_AT");
        char *end = NULL;
        fail_at = !v || !*v ? -1 : strcmp(v, "count") == 0 ? 0 : strtol(v, &end, 10);
        if (fail_at == 0) atexit(print_count);
        if (end && (*end || fail_at < 1)) die("S2D_FAULT_AT=%s: expected count or a point number >= 1", v);
    }
    points_reached++;
    if (fail_at > 0 && points_reached == fail_at)
        return err_set(err, "injected failure at fault point %ld (%s)", points_reached, site);
    return true;
}
void fault_leak_check(void) { __lsan_do_recoverable_leak_check(); }
#else
typedef int fault_point_unused; /* an empty translation unit is not ISO C */
#endif
