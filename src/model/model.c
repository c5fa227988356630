/* model.c: the tensor table, parameter/gradient buffers, random init, loading and saving HF directories. */
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/rng.h"
#include "io/safetensors.h"

static void add_tensor(model *m, int *cap, const char *name, int layer, tensor_kind kind, int64_t d0, int64_t d1) {
    if (m->n_tensors == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        m->tensors = xrealloc(m->tensors, sizeof(model_tensor) * (size_t)*cap);
    }
    model_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->layer = layer;
    t->kind = kind;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    t->offset = m->n_params;
    /* Keep every tensor 16-float (64-byte) aligned inside the one buffer. */
    t->span = (t->numel + 15) & ~(size_t)15;
    m->n_params += t->span;
}

static float *at(const model *m, float *base, int idx) { return base ? base + m->tensors[idx].offset : NULL; }

/* Fills the named views from a buffer laid out like the tensor table (relies on the table order). */
static void view_init(const model *m, model_view *v, float *base) {
    const model_config *c = &m->cfg;
    int i = 0;
    v->embed = at(m, base, i++);
    for (int l = 0; l < c->n_layers; l++) {
        model_layer_view *L = &v->layers[l];
        L->attn_norm = at(m, base, i++);
        L->wq = at(m, base, i++);
        L->wk = at(m, base, i++);
        L->wv = at(m, base, i++);
        L->wo = at(m, base, i++);
        if (c->arch == MODEL_QWEN3) {
            L->q_norm = at(m, base, i++);
            L->k_norm = at(m, base, i++);
        } else {
            L->q_norm = L->k_norm = NULL;
        }
        L->mlp_norm = at(m, base, i++);
        L->w_gate = at(m, base, i++);
        L->w_up = at(m, base, i++);
        L->w_down = at(m, base, i++);
    }
    v->final_norm = at(m, base, i++);
    v->lm_head = c->tie_embeddings ? v->embed : at(m, base, i++);
    CHECK(i == m->n_tensors, "tensor table and views disagree (%d vs %d)", i, m->n_tensors);
}

/* n zeroed floats of device memory on q. */
static float *alloc_floats(ops_queue *q, size_t n) {
    ops_tensor t = ops_alloc(q, OPS_F32, n);
    ops_zero(q, t, n);
    return t.p;
}

void model_params_download(const model *m, float *host) { ops_download(m->q, host, ot_f32(m->params), m->n_params); }
void model_params_upload(model *m, const float *host) { ops_upload(m->q, ot_f32(m->params), host, m->n_params); }

void model_params_copy(model *dst, const model *src) {
    CHECK(dst->n_params == src->n_params, "model_params_copy: %zu vs %zu parameters", dst->n_params, src->n_params);
    if (dst->q == src->q) {
        ops_copy(dst->q, ot_f32(dst->params), ot_f32(src->params), src->n_params);
        return;
    }
    float *host = xmalloc(S2D_MAX(src->n_params, 1) * sizeof(float)); /* host: staging between two devices */
    model_params_download(src, host);
    model_params_upload(dst, host);
    free(host);
}

/* A host array with the model's parameters: the device memory itself on host-memory backends, else a
 * downloaded copy (*staged set: free it, after model_params_upload when it was written). */
static float *host_params(const model *m, bool download, bool *staged) {
    float *p = ops_host_ptr(m->q, ot_f32(m->params));
    *staged = p == NULL;
    if (p) return p;
    p = xmalloc(S2D_MAX(m->n_params, 1) * sizeof(float)); /* host: staging of a device backend's params */
    if (download) model_params_download(m, p);
    return p;
}

void model_create(model *m, const model_config *cfg) { model_create_on(m, cfg, ops_default()); }

void model_create_on(model *m, const model_config *cfg, ops_queue *q) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->q = q;
    const model_config *c = cfg;
    int cap = 0;
    int64_t H = c->hidden, q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    char name[96];
    add_tensor(m, &cap, "model.embed_tokens.weight", -1, TENSOR_EMBEDDING, c->vocab, H);
    for (int l = 0; l < c->n_layers; l++) {
#define T_(suffix, kind, d0, d1)                                                                                     \
    do {                                                                                                             \
        snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                                                \
        add_tensor(m, &cap, name, l, kind, d0, d1);                                                                  \
    } while (0)
        T_("input_layernorm.weight", TENSOR_NORM, H, 0);
        T_("self_attn.q_proj.weight", TENSOR_LINEAR, q_dim, H);
        T_("self_attn.k_proj.weight", TENSOR_LINEAR, kv_dim, H);
        T_("self_attn.v_proj.weight", TENSOR_LINEAR, kv_dim, H);
        T_("self_attn.o_proj.weight", TENSOR_LINEAR, H, q_dim);
        if (c->arch == MODEL_QWEN3) {
            T_("self_attn.q_norm.weight", TENSOR_NORM, c->head_dim, 0);
            T_("self_attn.k_norm.weight", TENSOR_NORM, c->head_dim, 0);
        }
        T_("post_attention_layernorm.weight", TENSOR_NORM, H, 0);
        T_("mlp.gate_proj.weight", TENSOR_LINEAR, c->intermediate, H);
        T_("mlp.up_proj.weight", TENSOR_LINEAR, c->intermediate, H);
        T_("mlp.down_proj.weight", TENSOR_LINEAR, H, c->intermediate);
#undef T_
    }
    add_tensor(m, &cap, "model.norm.weight", -1, TENSOR_NORM, H, 0);
    if (!c->tie_embeddings) add_tensor(m, &cap, "lm_head.weight", -1, TENSOR_LINEAR, c->vocab, H);

    m->params = alloc_floats(m->q, m->n_params);
    m->w.layers = xcalloc((size_t)c->n_layers, sizeof(model_layer_view));
    m->g.layers = xcalloc((size_t)c->n_layers, sizeof(model_layer_view));
    view_init(m, &m->w, m->params);

    /* RoPE tables, as HF: freq = fp32(inv_freq) * fp32(position) in fp32, then cos/sin. */
    int half = c->head_dim / 2;
    double *inv = xmalloc(sizeof(double) * (size_t)half);
    model_rope_inv_freq(c, inv);
    const size_t n_rope = (size_t)c->max_pos * half;
    float *cos_h = xmalloc(S2D_MAX(n_rope, 1) * sizeof(float)), *sin_h = xmalloc(S2D_MAX(n_rope, 1) * sizeof(float));
    for (int p = 0; p < c->max_pos; p++)
        for (int i = 0; i < half; i++) {
            float f = (float)inv[i] * (float)p;
            cos_h[(size_t)p * half + i] = (float)cos((double)f);
            sin_h[(size_t)p * half + i] = (float)sin((double)f);
        }
    m->rope_cos = alloc_floats(m->q, n_rope);
    m->rope_sin = alloc_floats(m->q, n_rope);
    ops_upload(m->q, ot_f32(m->rope_cos), cos_h, n_rope);
    ops_upload(m->q, ot_f32(m->rope_sin), sin_h, n_rope);
    free(inv), free(cos_h), free(sin_h);
}

void model_free(model *m) {
    if (m->q) {
        ops_free(m->q, ot_f32(m->params));
        ops_free(m->q, ot_f32(m->grads));
        ops_free(m->q, ot_f32(m->rope_cos));
        ops_free(m->q, ot_f32(m->rope_sin));
    }
    free(m->tensors);
    free(m->w.layers);
    free(m->g.layers);
    memset(m, 0, sizeof *m);
}

void model_alloc_grads(model *m) {
    if (m->grads) return;
    m->grads = alloc_floats(m->q, m->n_params);
    view_init(m, &m->g, m->grads);
}

void model_free_grads(model *m) {
    ops_free(m->q, ot_f32(m->grads));
    m->grads = NULL;
    view_init(m, &m->g, NULL);
}

void model_zero_grads(model *m) {
    CHECK(m->grads, "model_zero_grads: call model_alloc_grads first");
    ops_zero(m->q, ot_f32(m->grads), m->n_params);
}

const model_tensor *model_find_tensor(const model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void model_init_random(model *m, uint64_t seed) {
    bool staged;
    float *params = host_params(m, false, &staged);
    /* One Philox stream per tensor: independent of threads and of the order tensors are visited. */
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        float *p = params + t->offset;
        for (size_t j = t->numel; j < t->span; j++) p[j] = 0.0f; /* padding */
        if (t->kind == TENSOR_NORM) {
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
            continue;
        }
        rng_stream r;
        rng_stream_init(&r, seed, (uint64_t)i);
        for (size_t j = 0; j < t->numel; j++) p[j] = (float)(0.02 * rng_next_normal(&r));
    }
    if (staged) model_params_upload(m, params), free(params);
}

/* Parameter count from the config alone (a check on the tensor table). */
static size_t expected_param_count(const model_config *c) {
    size_t H = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t per_layer = 2 * H + 2 * H * qd + 2 * H * kvd + 3 * H * (size_t)c->intermediate;
    if (c->arch == MODEL_QWEN3) per_layer += 2 * (size_t)c->head_dim;
    return (size_t)c->vocab * H * (c->tie_embeddings ? 1 : 2) + H + per_layer * (size_t)c->n_layers;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

bool model_load(model *m, const char *dir, s2d_err *err) {
    char path[4096];
    path_join(path, sizeof path, dir, "config.json");
    model_config cfg;
    if (!model_config_load(path, &cfg, err)) return false;
    model_create(m, &cfg);
    st_set *set = NULL;
    if (!st_open_dir(dir, &set, err)) {
        model_free(m);
        return false;
    }
    size_t loaded = 0;
    bool ok = true, staged;
    float *params = host_params(m, true, &staged);
    for (int i = 0; i < m->n_tensors && ok; i++) {
        const model_tensor *t = &m->tensors[i];
        const st_tensor *s = st_find(set, t->name);
        if (!s) {
            ok = err_set(err, "%s: missing tensor '%s' (expected by config.json)", dir, t->name);
            break;
        }
        if (!st_check_shape(s, t->ndim, t->shape, err) || !st_read_f32(s, params + t->offset, t->numel, err)) {
            ok = false;
            break;
        }
        const float *p = m->params + t->offset; /* NaN/Inf weights: a load error, not NaN outputs later */
        for (size_t k = 0; k < t->numel; k++)
            if (!isfinite(p[k])) {
                ok = err_set(err, "%s: tensor '%s' holds a non-finite value (%g at flat index %zu)", s->file, t->name,
                             (double)p[k], k);
                break;
            }
        if (!ok) break;
        loaded += t->numel;
    }
    for (int i = 0; i < st_count(set) && ok; i++) {
        const st_tensor *s = st_at(set, i);
        if (model_find_tensor(m, s->name)) continue;
        if (ends_with(s->name, "rotary_emb.inv_freq")) continue; /* a buffer some exports keep */
        if (cfg.tie_embeddings && strcmp(s->name, "lm_head.weight") == 0) {
            /* HF ties lm_head to the embedding and ignores a stored copy. */
            log_warn("%s: ignoring 'lm_head.weight' (tie_word_embeddings is true)", s->file);
            continue;
        }
        ok = err_set(err, "%s: unexpected tensor '%s' for a %s model with this config.json", s->file, s->name,
                     cfg.arch == MODEL_QWEN3 ? "qwen3" : "llama");
    }
    if (ok && loaded != expected_param_count(&cfg))
        ok = err_set(err, "%s: loaded %zu parameters, config.json implies %zu", dir, loaded,
                     expected_param_count(&cfg));
    st_close(set);
    if (staged) {
        if (ok) model_params_upload(m, params);
        free(params);
    }
    if (!ok) model_free(m);
    else log_info("loaded %s: %s, %zu parameters", dir, cfg.arch == MODEL_QWEN3 ? "qwen3" : "llama", loaded);
    return ok;
}

static bool write_text_atomic(const char *path, const char *text, s2d_err *err) {
    atomic_file af;
    if (!atomic_open(&af, path, err)) return false;
    if (fputs(text, af.fp) < 0 || fputc('\n', af.fp) < 0) {
        atomic_abort(&af);
        return err_set(err, "%s: write failed: %s", path, strerror(errno));
    }
    return atomic_commit(&af, err);
}

/* Writes model.safetensors then config.json into dir (which exists). */
static bool save_files(const model *m, const char *dir, bool bf16, s2d_err *err) {
    char path[4096];
    bool staged;
    float *params = host_params(m, true, &staged);
    st_write_tensor *ts = xcalloc((size_t)m->n_tensors, sizeof *ts);
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        ts[i].name = t->name;
        ts[i].ndim = t->ndim;
        ts[i].shape[0] = t->shape[0];
        ts[i].shape[1] = t->shape[1];
        ts[i].f32 = params + t->offset;
    }
    st_meta meta[] = {{"format", "pt"}};
    path_join(path, sizeof path, dir, "model.safetensors");
    bool ok = st_write(path, ts, m->n_tensors, bf16 ? ST_BF16 : ST_F32, meta, 1, err);
    free(ts);
    if (staged) free(params);
    if (!ok) return false;
    char *json = model_config_to_json(&m->cfg);
    if (bf16) { /* the dtype a reader should load in */
        char *p = strstr(json, "\"float32\"");
        if (p) {
            size_t n = strlen(json) + 8;
            char *fixed = xmalloc(n);
            snprintf(fixed, n, "%.*s\"bfloat16\"%s", (int)(p - json), json, p + strlen("\"float32\""));
            free(json);
            json = fixed;
        }
    }
    path_join(path, sizeof path, dir, "config.json");
    ok = write_text_atomic(path, json, err);
    free(json);
    return ok;
}

static void remove_dir_files(const char *dir) {
    const char *names[] = {"model.safetensors", "config.json"};
    char path[4096];
    for (size_t i = 0; i < S2D_ARRAY_LEN(names); i++) {
        path_join(path, sizeof path, dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

bool model_save(const model *m, const char *dir, bool bf16, s2d_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return err_set(err, "%s: exists and is not a directory", dir);
        return save_files(m, dir, bf16, err); /* each file is replaced atomically */
    }
    /* A new directory appears only when complete: build it under a temporary name, then rename. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    if (mkdir(tmp, 0755) != 0) return err_set(err, "%s: cannot create directory: %s", tmp, strerror(errno));
    if (!save_files(m, tmp, bf16, err)) {
        remove_dir_files(tmp);
        return false;
    }
    if (rename(tmp, dir) != 0) {
        int e = errno;
        remove_dir_files(tmp);
        return err_set(err, "%s: cannot create directory: %s", dir, strerror(e));
    }
    return true;
}
