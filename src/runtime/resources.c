/* resources.c: the run's named models (loaded on first use, saved as HF directories), its datasets as text
 * and their encodings with the chat template. */
#include "runtime/stage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "text/tokenizer.h"

bool pl_mkdir_p(const char *path, s2d_err *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return err_set(err, "%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return err_set(err, "%s: cannot create: %s", buf, strerror(errno));
    return true;
}

named_model *pl_find_named(pl_run *r, const char *name) {
    for (int i = 0; i < r->n_models; i++)
        if (strcmp(r->models[i].name, name) == 0) return &r->models[i];
    return NULL;
}

bool pl_ensure_loaded(pl_run *r, named_model *nm, s2d_err *err) {
    if (nm->loaded) return true;
    const tc_model *d = &r->tc->models[nm->def];
    if (d->path) {
        log_info("loading model %s from %s", nm->name, d->path);
        if (!model_load(&nm->m, d->path, err)) return err_prefix(err, "model %s", nm->name);
    } else {
        model_create(&nm->m, &d->cfg);
        model_init_random(&nm->m, d->init_seed);
    }
    nm->loaded = true;
    if (nm->tok && tok_vocab_size(nm->tok) > nm->m.cfg.vocab)
        return err_set(err, "%s: model %s: its tokenizer (%s) has %d tokens but the model's vocabulary is %d",
                       d->where, nm->name, nm->tok_dir, tok_vocab_size(nm->tok), nm->m.cfg.vocab);
    return true;
}

void pl_model_copy(model *dst, const model *src) {
    model_create(dst, &src->cfg);
    model_params_copy(dst, src);
    dst->source_bf16 = src->source_bf16;
}

/* The token string of id in tok, or NULL (tokenizer_config.json's bos/eos when the source has none). */
static const char *token_or_null(const tokenizer *tok, int id) {
    return tok && id >= 0 && id < tok_vocab_size(tok) ? tok_id_to_token(tok, id) : NULL;
}

/* OUT/models/<name>/: an HF directory (config, weights in the source's dtype: bf16 in, bf16 out, the fp32 masters
 * stay in the checkpoints; generation_config.json) with the tokenizer side of the model's tokenizer directory. */
bool pl_save_model(pl_run *r, const named_model *nm, s2d_err *err) {
    char dir[4096], models_dir[4096];
    path_join(models_dir, sizeof models_dir, r->out, "models");
    path_join(dir, sizeof dir, models_dir, nm->name);
    if (!pl_mkdir_p(dir, err)) return false;
    if (!model_save(&nm->m, dir, nm->m.source_bf16, err)) return false;
    if (!nm->tok_dir) return true;
    const model_config *c = &nm->m.cfg;
    return tok_copy_files(nm->tok_dir, dir, token_or_null(nm->tok, c->bos_id),
                          c->n_eos ? token_or_null(nm->tok, c->eos_ids[0]) : NULL, err);
}

/* ---- data ---- */
bool pl_load_text_set(const tc_dataset *d, text_set *ts, s2d_err *err) {
    memset(ts, 0, sizeof *ts);
    if (d->arith) {
        arith_set as;
        if (!arith_make(&d->arith_p, d->split, d->size, &as, err)) return err_prefix(err, "%s: datasets.%s", d->where, d->name);
        ts->n = as.n, ts->prompt = as.problem, ts->answer = as.answer, ts->target = as.solution;
        return true; /* ownership moves to ts */
    }
    dataset ds;
    ds_load_opts o = {.format = d->format};
    if (!dataset_load(&ds, d->file, &o, err)) return err_prefix(err, "datasets.%s", d->name);
    int n = d->size > 0 ? S2D_MIN(d->size, ds.n) : ds.n;
    if (n == 0) {
        dataset_free(&ds);
        return err_set(err, "%s: dataset %s has no records", d->file, d->name);
    }
    ts->n = n;
    ts->prompt = xmalloc((size_t)n * sizeof(char *));
    ts->answer = xmalloc((size_t)n * sizeof(char *));
    ts->target = xmalloc((size_t)n * sizeof(char *));
    for (int i = 0; i < n; i++) {
        ts->prompt[i] = xstrdup(ds.rec[i].prompt);
        ts->answer[i] = xstrdup(ds.rec[i].answer);
        size_t cap = strlen(ds.rec[i].answer) + 16;
        ts->target[i] = xmalloc(cap);
        snprintf(ts->target[i], cap, "\\boxed{%s}", ds.rec[i].answer);
    }
    dataset_free(&ds);
    return true;
}

void pl_free_text_set(text_set *ts) {
    for (int i = 0; i < ts->n; i++) free(ts->prompt[i]), free(ts->answer[i]), free(ts->target[i]);
    free(ts->prompt), free(ts->answer), free(ts->target);
}

/* Stop ids of the template, looked up by name in this tokenizer (the demo tokenizer has its own ids). */
int pl_stop_ids(const train_config *tc, const tokenizer *tok, int32_t *ids, int max) {
    static const char *const qwen[] = {"<|im_end|>", "<|endoftext|>", NULL};
    static const char *const llama[] = {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", NULL};
    static const char *const none[] = {"<|endoftext|>", "<|end_of_text|>", NULL};
    const char *const *names = tc->chat == CHAT_LLAMA3 ? llama : tc->chat == CHAT_NONE ? none : qwen;
    int n = 0;
    for (int i = 0; names[i] && n < max; i++) {
        int32_t id = tok_token_id(tok, names[i]);
        if (id >= 0) ids[n++] = id;
    }
    return n;
}

bool pl_encode_set(const train_config *tc, const tokenizer *tok, const text_set *ts, int32_t stop, enc_set *e,
                   s2d_err *err) {
    memset(e, 0, sizeof *e);
    e->n = ts->n;
    e->start = xmalloc((size_t)(ts->n + 1) * sizeof(int));
    e->tstart = xmalloc((size_t)(ts->n + 1) * sizeof(int));
    tok_ids p = {0}, t = {0};
    e->start[0] = e->tstart[0] = 0;
    for (int i = 0; i < ts->n; i++) {
        char *text = chat_render_problem(tc->chat, ts->prompt[i], tc->instruction);
        int n1 = tok_encode(tok, text, strlen(text), &p, err);
        free(text);
        int n2 = n1 < 0 ? -1 : tok_encode(tok, ts->target[i], strlen(ts->target[i]), &t, err);
        if (n2 < 0) { /* the ids so far go with e, which pl_free_enc_set releases */
            e->ids = p.ids, e->tids = t.ids;
            return err_prefix(err, n1 < 0 ? "prompt %d" : "target %d", i);
        }
        if (stop >= 0) {
            if (t.n == t.cap) {
                t.cap = t.cap ? 2 * t.cap : 16;
                t.ids = xrealloc(t.ids, t.cap * sizeof(int32_t));
            }
            t.ids[t.n++] = stop, n2++;
        }
        e->start[i + 1] = (int)p.n, e->tstart[i + 1] = (int)t.n;
        e->max_prompt = S2D_MAX(e->max_prompt, n1);
        e->max_target = S2D_MAX(e->max_target, n2);
    }
    e->ids = p.ids, e->tids = t.ids;
    return true;
}

void pl_free_enc_set(enc_set *e) { free(e->start), free(e->ids), free(e->tstart), free(e->tids); }

/* Architecture of a named model, loaded here or not. */
const model_config *pl_cfg_of(pl_run *r, const named_model *nm) {
    return nm->loaded ? &nm->m.cfg : &r->tc->models[nm->def].cfg;
}
