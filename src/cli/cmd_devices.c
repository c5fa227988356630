/* cmd_devices.c: s2d devices — the backends compiled into this binary and the devices each can see. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "ops/ops.h"

int cmd_devices(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: s2d devices\n  lists the compiled backends and their devices; use one with --device NAME[:N]\n"
               "  (logprobs, generate, eval, train) or device: in a training config\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "s2d devices: takes no arguments (got '%s')\n", argv[1]);
        return 2;
    }
    int n;
    const ops_backend *const *list = ops_backends(&n);
    printf("backends compiled in: %d\n", n);
    for (int i = 0; i < n; i++) {
        const char *name = ops_backend_name(list[i]);
        int devices = ops_backend_devices(list[i]);
        printf("%s: %d device%s\n", name, devices, devices == 1 ? "" : "s");
        for (int d = 0; d < devices; d++) {
            char desc[512];
            ops_backend_describe(list[i], d, desc, sizeof desc);
            printf("  %s:%d  %s\n", name, d, desc);
        }
        if (devices == 0) printf("  (none visible: --device %s fails)\n", name);
    }
    return 0;
}
