/* s2d train: run a training pipeline (stages of sft / grpo / fkl / opd) in one process.
 *
 *   s2d train CONFIG.yaml [--out DIR] [--set key.path=value ...] [--dry-run] [--resume]
 *
 * The config schema is in algo/train_config.h; the run writes DIR/config.yaml (resolved), DIR/budget.json
 * (algo/pipeline_budget.h), DIR/metrics.jsonl and
 * DIR/models/<name>/ (HF directories), DIR/checkpoints/ckpt-SS-STEP.h5, DIR/rollouts.h5 and
 * DIR/metrics.h5, prints a progress line per step on stderr and a summary table on stdout. */
#include <stdlib.h>
#include <string.h>

#include "algo/pipeline.h"
#include "algo/train_config.h"
#include "algo/transport.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/threads.h"
#include "ops/ops.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d train CONFIG.yaml [--out DIR] [--set key.path=value ...] [--dry-run] [--resume|--overwrite]\n"
            "  --out DIR      output directory (default: the config's out:, else runs/<config name>)\n"
            "  --set K=V      override any config key (validated like the file), e.g. --set pipeline[0].steps=5\n"
            "                 (not defaults.*: its anchors are merged into the stages before --set applies)\n"
            "  --dry-run      validate the config, print the plan, the threads per rank and the resolved config\n"
            "                 (every key with its value, defaults included) without loading weights or data\n"
            "  --device NAME  backend and device for every model of this process: cpu, cuda, cuda:N (default: the\n"
            "                 config's device:, else cpu; see s2d devices)\n"
            "  --resume       continue from the newest complete checkpoint in DIR/checkpoints (same config; roles,\n"
            "                 runtime and fault may differ, e.g. another number of learners)\n"
            "  --overwrite    start a new run in a non-empty DIR (removes its checkpoints and logs; without it,\n"
            "                 a fresh run into a non-empty DIR is refused)\n"
            "writes DIR/config.yaml, metrics.jsonl, budget.json (labels and compute per stage, docs/design.md),\n"
            "models/<name>/, checkpoints/, rollouts.h5 and metrics.h5; a summary and a budget table on stdout\n");
}

int cmd_train(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *device = NULL;
    bool dry_run = false, resume = false, overwrite = false;
    char **sets = xcalloc((size_t)argc, sizeof(char *));
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (strcmp(a, "--out") == 0) {
            if (i + 1 >= argc) die("--out needs a directory");
            out = argv[++i];
        } else if (strcmp(a, "--set") == 0) {
            if (i + 1 >= argc) die("--set needs key.path=value");
            sets[n_sets++] = argv[++i];
        } else if (strncmp(a, "--set=", 6) == 0) {
            sets[n_sets++] = argv[i] + 6;
        } else if (strcmp(a, "--device") == 0) {
            if (i + 1 >= argc) die("--device needs a name (cpu, cuda, cuda:N)");
            device = argv[++i];
        } else if (strcmp(a, "--resume") == 0) {
            resume = true;
        } else if (strcmp(a, "--overwrite") == 0) {
            overwrite = true;
        } else if (strcmp(a, "--dry-run") == 0) {
            dry_run = true;
        } else if (a[0] == '-') {
            usage(stderr);
            die("train: unknown option '%s'", a);
        } else if (!config) {
            config = a;
        } else {
            die("train: one config file expected, got '%s' and '%s'", config, a);
        }
    }
    if (!config) die_hint("s2d train --help", "train: CONFIG.yaml is required");
    s2d_err err;
    train_config tc;
    if (!train_config_load(config, sets, n_sets, dry_run, &tc, &err)) die("%s", err.msg);
    if (device) snprintf(tc.device, sizeof tc.device, "%s", device);
    if (!dry_run) cli_use_device(tc.device); /* dry runs name it in the plan only */
    char out_buf[4096];
    if (!out) {
        cfg_node *o = cfg_find(tc.root, "out");
        if (o && !cfg_is_null(o) && o->kind == CFG_SCALAR) {
            out = o->value;
        } else {
            const char *base = strrchr(config, '/');
            base = base ? base + 1 : config;
            snprintf(out_buf, sizeof out_buf, "runs/%.*s", (int)strcspn(base, "."), base);
            out = out_buf;
        }
    }
    if (!pl_check_inputs(&tc, dry_run, &err)) die("%s", err.msg); /* before anything is written; --dry-run warns */
    if (dry_run) {
        train_config_print_plan(&tc, stdout);
        printf("output directory: %s\n", out);
        char th[512];
        threads_describe(threads_plan(), th, sizeof th);
        printf("backend cpu, %s\n", th);
        printf("resolved config (written to %s/config.yaml):\n", out);
        if (!cfg_write(tc.root, stdout, &err)) die("%s", err.msg);
        train_config_free(&tc);
        free(sets);
        return 0;
    }
    /* under mpirun/srun: the MPI transport (roles from the config); otherwise every role runs here */
    transport *tp = NULL;
    transport_factory make = transport_get_factory();
    if (tp_launched() && make) tp = make(tc.n_generators, tc.n_scorers, tc.n_learners, tc.timeout_s, tc.heartbeat_s);
    else tp = transport_local_new();
    if (tp_plays(tp, ROLE_SCHEDULER)) {
        char th[512], layout[64], cfg_path[4200];
        threads_describe(threads_plan(), th, sizeof th);
        if (tp->local) snprintf(layout, sizeof layout, "single");
        else tp_layout(tp, layout, sizeof layout);
        path_join(cfg_path, sizeof cfg_path, out, "config.yaml");
        log_info("backend %s (%s), %s; layout %s (%d rank%s%s); resolved config %s", ops_backend_name(ops_default()->be),
                 ops_default()->name, th, layout, tp->size,
                 tp->size == 1 ? "" : "s", tp->local ? ", every role in this process" : "", cfg_path);
    }
    s2d_signals_install();
    bool stopped = false;
    if (tp->rank == 0 && !pl_prepare_out(out, resume, overwrite, &err)) die("%s", err.msg); /* rank 0 owns OUT */
    if (!pipeline_run(&tc, out, tp, resume, &stopped, &err)) die("%s", err.msg);
    tp->finalize(tp);
    train_config_free(&tc);
    free(sets);
    return 0;
}
