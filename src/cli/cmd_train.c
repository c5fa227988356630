/* s2d train: run a training pipeline (stages of sft / grpo / fkl / opd) in one process.
 *
 *   s2d train CONFIG.yaml [--out DIR] [--set key.path=value ...] [--dry-run] [--resume]
 *
 * The config schema is in runtime/train_config.h; the run writes DIR/config.yaml (resolved), DIR/budget.json
 * (runtime/budget.h), DIR/metrics.jsonl and
 * DIR/models/<name>/ (HF directories), DIR/checkpoints/ckpt-SS-STEP.h5, DIR/rollouts.h5,
 * DIR/metrics.h5 and DIR/tensorboard/ (event files), prints a progress line per step on stderr and a summary
 * table on stdout. */
#include <stdlib.h>
#include <string.h>

#include "runtime/pipeline.h"
#include "runtime/train_config.h"
#include "runtime/transport.h"
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
            "outputs: DIR/config.yaml, DIR/budget.json (labels and compute per stage, docs/design.md), DIR/metrics.jsonl\n"
            "  (global_step in every record), DIR/metrics.h5, DIR/rollouts.h5, DIR/models/,\n"
            "  DIR/checkpoints/, DIR/tensorboard/ (tensorboard --logdir DIR/tensorboard; logging.tensorboard); curves\n"
            "  as PNGs: s2d plot DIR\n");
}

int cmd_train(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *device = NULL;
    bool dry_run = false, resume = false, overwrite = false;
    char **sets = xcalloc((size_t)argc, sizeof(char *));
    int n_sets = 0;
    enum { O_OUT = 256, O_SET, O_DEVICE, O_RESUME, O_OVERWRITE, O_DRY_RUN };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},           {"out", required_argument, 0, O_OUT},
        {"set", required_argument, 0, O_SET},    {"device", required_argument, 0, O_DEVICE},
        {"resume", no_argument, 0, O_RESUME},    {"overwrite", no_argument, 0, O_OVERWRITE},
        {"dry-run", no_argument, 0, O_DRY_RUN},  {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("train", argc, argv, opts, usage, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); free(sets); return 0;
        case O_OUT: out = val; break;
        case O_SET: sets[n_sets++] = optarg; break; /* argv memory, not const */
        case O_DEVICE: device = val; break;
        case O_RESUME: resume = true; break;
        case O_OVERWRITE: overwrite = true; break;
        case O_DRY_RUN: dry_run = true; break;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (config) die("train: one config file expected, got '%s' and '%s'", config, argv[i]);
        config = argv[i];
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
        char dev[512];
        ops_backend_describe(ops_default()->be, ops_default()->device, dev, sizeof dev);
        log_info("backend %s (%s: %s), %s; layout %s (%d rank%s%s); resolved config %s",
                 ops_backend_name(ops_default()->be), ops_default()->name, dev, th, layout, tp->size,
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
