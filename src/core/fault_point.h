/* fault_point.h: numbered failure points for the error-path leak test (tests/cli/test_leaks.sh).
 *
 * Built into the sanitizer binaries only (-DS2D_FAULT_POINTS, the Makefile's SAN_CFLAGS): there
 * S2D_FAULT_AT=N makes the Nth point a process reaches fail with "injected failure at fault point N (SITE)", as
 * if the allocation or I/O step it stands before had failed, and S2D_FAULT_AT=count prints at exit how many
 * points the process reached; and die() runs LeakSanitizer's check before its _exit (which would skip it), so
 * an error path that loses memory is reported. In the release build both are no-ops. */
#pragma once
#include <stdbool.h>

#include "core/common.h"

#ifdef S2D_FAULT_POINTS
bool fault_point(const char *site, s2d_err *err);
void fault_leak_check(void);
#else
static inline void fault_leak_check(void) {}
static inline bool fault_point(const char *site, s2d_err *err) {
    (void)site, (void)err;
    return true;
}
#endif
