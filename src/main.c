/* main.c: the s2d command. Dispatches to the subcommands in src/cli/. */
#include <stdio.h>
#include <string.h>

#include "runtime/transport.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/threads.h"
#include "runtime.h" /* mpi/: the MPI transport (main.c is the one src/ file that may use it) */

#define S2D_VERSION "0.1.0"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand SUBCOMMANDS[] = {
    {"init-model", cmd_init_model, "write a random-initialised model as a Hugging Face directory"},
    {"logprobs", cmd_logprobs, "per-token log-probs of token sequences (JSON lines on stdin)"},
    {"generate", cmd_generate, "sample continuations of prompts (JSON lines on stdin)"},
    {"tokenize", cmd_tokenize, "encode text with a Hugging Face tokenizer.json (or --decode)"},
    {"verify", cmd_verify, "check math answers against references (JSON lines on stdin)"},
    {"eval", cmd_eval, "sample K completions per problem and report avg@K, pass@K, maj@K"},
    {"train", cmd_train, "run a training pipeline (teacher RL -> bridge -> student RL) from a YAML config"},
    {"study", cmd_study, "run a study: the papers' comparisons (arms) over seeds, with paired statistics"},
    {"export", cmd_export, "write a checkpoint's model as a Hugging Face directory (config, safetensors)"},
    {"inspect", cmd_inspect, "summarise an s2d HDF5 file (checkpoint, rollout log, metrics)"},
    {"plot", cmd_plot, "draw a run's metric curves (one PNG per stage, gnuplot) into OUT/plots"},
    {"devices", cmd_devices, "list the compute backends compiled in and the devices each can see"},
};

static void usage(FILE *out) {
    fprintf(out,
            "s2d %s: sparse-to-dense post-training (teacher RL -> dense bridge -> student RL)\n\n"
            "usage: s2d <command> [options]     (s2d <command> --help for its options)\n\ncommands:\n",
            S2D_VERSION);
    for (size_t i = 0; i < S2D_ARRAY_LEN(SUBCOMMANDS); i++)
        fprintf(out, "  %-12s %s\n", SUBCOMMANDS[i].name, SUBCOMMANDS[i].summary);
    fprintf(out, "\nenvironment: S2D_LOG=debug|info|warn|quiet, OMP_NUM_THREADS=N (CPU threads per process; default:\n"
                 "  cores in the affinity mask / ranks on the node), OMP_WAIT_POLICY (default: passive),\n"
                 "  S2D_DEVICE=cpu|cuda[:N] (default device)\n"
                 "distributed: mpirun -np N s2d train CONFIG.yaml (N = 1 + roles.generators + scorers + learners)\n");
}

int main(int argc, char **argv) {
    threads_early(argv); /* first: OpenMP threads per rank, OMP_WAIT_POLICY (may re-execute once) */
    transport_set_factory(mpi_transport_new); /* used by `train` only when launched by mpirun/srun */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("s2d %s\n", S2D_VERSION);
        return 0;
    }
    for (size_t i = 0; i < S2D_ARRAY_LEN(SUBCOMMANDS); i++)
        if (strcmp(argv[1], SUBCOMMANDS[i].name) == 0) return SUBCOMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "s2d: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
