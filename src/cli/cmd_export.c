/* cmd_export.c: s2d export CHECKPOINT.h5 --out DIR [--model NAME] [--tokenizer DIR] [--dtype f32|bf16]
 *
 * Writes one named model of an s2d checkpoint as a Hugging Face directory (config.json, model.safetensors,
 * tokenizer files copied from --tokenizer). The directory appears only when complete: it is built under
 * "DIR.tmp.<pid>" and renamed. An existing DIR is refused (never half-overwritten). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "io/h5io.h"
#include "model/model.h"
#include "model/model_ckpt.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out, "usage: s2d export CHECKPOINT.h5 --out DIR [--model NAME] [--tokenizer DIR] [--dtype f32|bf16]\n"
                 "  --out DIR        new Hugging Face directory (must not exist; appears only when complete)\n"
                 "  --model NAME     which named model of the checkpoint (needed when it holds several)\n"
                 "  --tokenizer DIR  copy tokenizer.json (required there) and the other tokenizer files from DIR\n"
                 "  --dtype          safetensors weights as f32 or bf16 (default: as stored in the checkpoint)\n");
}

typedef struct {
    const model *m;
    bool bf16;
    const char *tok_dir;
} export_job;

static bool fill_export_dir(const char *tmp, void *ctx, s2d_err *err) {
    const export_job *j = ctx;
    const model *m = j->m;
    bool ok = model_save(m, tmp, j->bf16, err);
    if (ok && j->tok_dir) {
        /* the tokenizer must fit the model: every id it can produce must be a row of the embedding */
        tokenizer *tok = NULL;
        ok = tok_load(j->tok_dir, &tok, err) || err_prefix(err, "--tokenizer");
        if (ok && tok_vocab_size(tok) > m->cfg.vocab)
            ok = err_set(err, "--tokenizer %s: %d tokens, but the model's vocabulary has %d (vocab_size): its ids would "
                              "index past the embedding; use the tokenizer the model was trained with", j->tok_dir,
                         tok_vocab_size(tok), m->cfg.vocab);
        const char *bos = ok && m->cfg.bos_id >= 0 ? tok_id_to_token(tok, m->cfg.bos_id) : NULL;
        const char *eos = ok && m->cfg.n_eos ? tok_id_to_token(tok, m->cfg.eos_ids[0]) : NULL;
        if (ok) ok = tok_copy_files(j->tok_dir, tmp, bos, eos, err);
        tok_free(tok);
    }
    return ok;
}

static bool export_dir(const model *m, const char *out, bool bf16, const char *tok_dir, s2d_err *err) {
    struct stat st;
    if (stat(out, &st) == 0) return err_set(err, "%s: already exists (export never overwrites)", out);
    export_job job = {m, bf16, tok_dir};
    return dir_build_atomic(out, fill_export_dir, &job, err);
}

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *name = NULL, *tok = NULL, *dtype = NULL;
    enum { O_OUT = 256, O_MODEL, O_TOKENIZER, O_DTYPE };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"out", required_argument, 0, O_OUT},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"tokenizer", required_argument, 0, O_TOKENIZER},
                                         {"dtype", required_argument, 0, O_DTYPE}, {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("export", argc, argv, opts, NULL, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); return 0;
        case O_OUT: out = val; break;
        case O_MODEL: name = val; break;
        case O_TOKENIZER: tok = val; break;
        case O_DTYPE: dtype = val; break;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (ckpt) die_hint("s2d export --help", "more than one checkpoint given ('%s', '%s')", ckpt, argv[i]);
        ckpt = argv[i];
    }
    if (!ckpt || !out) die_hint("s2d export --help", "export needs CHECKPOINT.h5 and --out DIR");
    if (dtype && strcmp(dtype, "f32") != 0 && strcmp(dtype, "bf16") != 0)
        die("--dtype must be f32 or bf16, got '%s'", dtype);

    s2d_err err = {0};
    char **names = NULL;
    int n_names = 0;
    if (!ckpt_model_names(ckpt, &names, &n_names, &err)) die("%s", err.msg);
    if (!name) {
        if (n_names != 1) {
            char list[1024] = "";
            for (int i = 0; i < n_names; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
            die_hint("s2d export --help", "%s holds %d models (%s): choose one with --model NAME", ckpt, n_names,
                     n_names ? list : "none");
        }
        name = names[0];
    }
    model m;
    bool stored_bf16 = false;
    if (!model_ckpt_load(ckpt, name, &m, &stored_bf16, &err)) die("%s", err.msg);
    bool bf16 = dtype ? strcmp(dtype, "bf16") == 0 : stored_bf16;
    if (!export_dir(&m, out, bf16, tok, &err)) die("%s", err.msg);
    log_info("exported model '%s' of %s to %s (%zu parameters, %s)", name, ckpt, out, m.n_params, bf16 ? "bf16" : "f32");
    model_free(&m);
    h5_free_names(names, n_names);
    return 0;
}
