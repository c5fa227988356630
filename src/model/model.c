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
#include "model/model_spec.h"

static void add_tensor(model *m, int *cap, const char *name, int layer, tensor_kind kind, int64_t d0, int64_t d1,
                       int spec) {
    if (m->n_tensors == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        m->tensors = xrealloc(m->tensors, sizeof(model_tensor) * (size_t)*cap);
    }
    model_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->layer = layer;
    t->kind = kind;
    t->spec = spec;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    t->offset = m->n_params;
    /* Keep every tensor 16-float (64-byte) aligned inside the one buffer. */
    t->span = (t->numel + 15) & ~(size_t)15;
    m->n_params += t->span;
}

size_t model_config_params(const model_config *c) {
    size_t n = 0;
    for (int i = 0; i < MODEL_N_SPECS; i++) {
        const model_tensor_spec *sp = &MODEL_SPECS[i];
        if (!model_spec_applies(c, sp)) continue;
        int64_t d0 = model_spec_dim(c, sp->d0), d1 = model_spec_dim(c, sp->d1);
        size_t numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
        n += sp->per_layer ? numel * (size_t)c->n_layers : numel;
    }
    return n;
}

/* The tensor table from the spec rows that apply to the config: globals before the layers stay before them,
 * per-layer rows repeat for every layer, in spec order. */
static void build_table(model *m) {
    const model_config *c = &m->cfg;
    int cap = 0;
    char name[96];
    int first_layer_spec = -1, after_layers = MODEL_N_SPECS;
    for (int i = 0; i < MODEL_N_SPECS; i++) {
        if (MODEL_SPECS[i].per_layer && first_layer_spec < 0) first_layer_spec = i;
        if (!MODEL_SPECS[i].per_layer && first_layer_spec >= 0 && after_layers == MODEL_N_SPECS) after_layers = i;
    }
    for (int i = 0; i < first_layer_spec; i++) {
        const model_tensor_spec *sp = &MODEL_SPECS[i];
        if (model_spec_applies(c, sp))
            add_tensor(m, &cap, sp->name, -1, sp->kind, model_spec_dim(c, sp->d0), model_spec_dim(c, sp->d1), i);
    }
    for (int l = 0; l < c->n_layers; l++)
        for (int i = first_layer_spec; i < after_layers; i++) {
            const model_tensor_spec *sp = &MODEL_SPECS[i];
            if (!model_spec_applies(c, sp)) continue;
            snprintf(name, sizeof name, sp->name, l);
            add_tensor(m, &cap, name, l, sp->kind, model_spec_dim(c, sp->d0), model_spec_dim(c, sp->d1), i);
        }
    for (int i = after_layers; i < MODEL_N_SPECS; i++) {
        const model_tensor_spec *sp = &MODEL_SPECS[i];
        if (model_spec_applies(c, sp))
            add_tensor(m, &cap, sp->name, -1, sp->kind, model_spec_dim(c, sp->d0), model_spec_dim(c, sp->d1), i);
    }
}

/* Fills the views of a buffer laid out like the tensor table: each tensor's spec row names its field. */
static void view_init(const model *m, model_view *v, float *base) {
    model_layer_view *layers = v->layers;
    memset(v, 0, sizeof *v);
    v->layers = layers;
    memset(layers, 0, sizeof *layers * (size_t)m->cfg.n_layers);
    if (!base) return;
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        const model_tensor_spec *sp = &MODEL_SPECS[t->spec];
        char *owner = sp->per_layer ? (char *)&layers[t->layer] : (char *)v;
        *(float **)(owner + sp->view_offset) = base + t->offset;
    }
    if (m->cfg.tie_embeddings) v->lm_head = v->embed;
    CHECK(v->embed && v->final_norm && v->lm_head, "tensor table and views disagree");
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
    build_table(m);
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
        if (t->kind == TENSOR_NORM || t->kind == TENSOR_BIAS) { /* as HF: norm weights 1, biases 0 */
            for (size_t j = 0; j < t->numel; j++) p[j] = t->kind == TENSOR_NORM ? 1.0f : 0.0f;
            continue;
        }
        rng_stream r;
        rng_stream_init(&r, seed, (uint64_t)i);
        for (size_t j = 0; j < t->numel; j++) p[j] = (float)(0.02 * rng_next_normal(&r));
    }
    if (staged) model_params_upload(m, params), free(params);
}

/* Parameter count from the config and the descriptor alone (a check on the tensor table). */
static size_t expected_param_count(const model_config *c) {
    const model_arch_desc *a = model_arch_of(c->arch);
    size_t H = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t per_layer = 2 * H + 2 * H * qd + 2 * H * kvd + 3 * H * (size_t)c->intermediate;
    if (a->qk_norm) per_layer += 2 * (size_t)c->head_dim;
    if (a->qkv_bias) per_layer += qd + 2 * kvd;
    return (size_t)c->vocab * H * (c->tie_embeddings ? 1 : 2) + H + per_layer * (size_t)c->n_layers;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The config.json key(s) behind a tensor dimension, with their values: "key 'hidden_size' 64". */
static void dim_keys(const model_config *c, model_dim d, char *buf, size_t cap) {
    switch (d) {
    case DIM_H: snprintf(buf, cap, "key 'hidden_size' %d", c->hidden); break;
    case DIM_QD: snprintf(buf, cap, "keys 'num_attention_heads' x 'head_dim' %d x %d", c->n_heads, c->head_dim); break;
    case DIM_KVD: snprintf(buf, cap, "keys 'num_key_value_heads' x 'head_dim' %d x %d", c->n_kv_heads, c->head_dim); break;
    case DIM_I: snprintf(buf, cap, "key 'intermediate_size' %d", c->intermediate); break;
    case DIM_V: snprintf(buf, cap, "key 'vocab_size' %d", c->vocab); break;
    case DIM_HD: snprintf(buf, cap, "key 'head_dim' %d", c->head_dim); break;
    default: snprintf(buf, cap, "?"); break;
    }
}

/* Every tensor config.json implies, against the weights' headers, before anything is allocated: a huge
 * num_hidden_layers or hidden_size is then a message naming the key, not gigabytes asked for in vain. */
static bool check_weights(const model_config *c, const st_set *set, const char *cfg_path, const char *dir,
                          s2d_err *err) {
    char name[96];
    for (int i = 0; i < MODEL_N_SPECS; i++) {
        const model_tensor_spec *sp = &MODEL_SPECS[i];
        if (!model_spec_applies(c, sp)) continue;
        for (int l = 0; l < (sp->per_layer ? c->n_layers : 1); l++) {
            snprintf(name, sizeof name, sp->name, l); /* global names hold no %d */
            const st_tensor *t = st_find(set, name);
            if (!t) {
                bool layer_absent = sp->per_layer && l > 0;
                for (int k = 0; layer_absent && k < MODEL_N_SPECS; k++) { /* no tensor of layer l at all? */
                    char other[96];
                    if (!MODEL_SPECS[k].per_layer) continue;
                    snprintf(other, sizeof other, MODEL_SPECS[k].name, l);
                    layer_absent = st_find(set, other) == NULL;
                }
                if (layer_absent)
                    return err_set(err, "%s: key 'num_hidden_layers' is %d, but the weights in %s hold %d layer%s (no "
                                   "tensor '%s')", cfg_path, c->n_layers, dir, l, l == 1 ? "" : "s", name);
                return err_set(err, "%s: missing tensor '%s' (expected by config.json)", dir, name);
            }
            const int64_t want[2] = {model_spec_dim(c, sp->d0), model_spec_dim(c, sp->d1)};
            const int nd = want[1] > 0 ? 2 : 1;
            bool bad0 = t->ndim != nd || t->shape[0] != want[0], bad1 = nd == 2 && (t->ndim != 2 || t->shape[1] != want[1]);
            if (!bad0 && !bad1) continue;
            char got[64], implied[64], keys0[96], keys1[96] = "";
            if (t->ndim == 2) snprintf(got, sizeof got, "[%lld, %lld]", (long long)t->shape[0], (long long)t->shape[1]);
            else if (t->ndim == 1) snprintf(got, sizeof got, "[%lld]", (long long)t->shape[0]);
            else snprintf(got, sizeof got, "of %d dimensions", t->ndim);
            if (nd == 2) snprintf(implied, sizeof implied, "[%lld, %lld]", (long long)want[0], (long long)want[1]);
            else snprintf(implied, sizeof implied, "[%lld]", (long long)want[0]);
            dim_keys(c, bad0 ? sp->d0 : sp->d1, keys0, sizeof keys0);
            if (bad0 && bad1 && sp->d1 != sp->d0) dim_keys(c, sp->d1, keys1, sizeof keys1);
            return err_set(err, "%s: %s%s%s does not match the weights: tensor '%s' in %s has shape %s, config.json "
                           "implies %s", cfg_path, keys0, keys1[0] ? " and " : "", keys1, name, t->file, got, implied);
        }
    }
    return true;
}

/* What model_create will ask for (parameters, RoPE tables and their host copies) against what is available,
 * naming max_position_embeddings when the tables are what does not fit (the weights cannot bound it). */
static bool check_memory(const model_config *c, const char *cfg_path, s2d_err *err) {
    const char *bound;
    const double avail = (double)s2d_mem_available(&bound);
    const double params = 4.0 * (double)expected_param_count(c) + 64.0 * 16 * (c->n_layers + 2);
    const double rope = 4.0 * 4 * (double)c->max_pos * (c->head_dim / 2); /* cos + sin, host and device */
    if (params + rope <= avail) return true;
    if (rope > params)
        return err_set(err, "%s: key 'max_position_embeddings' %d: its RoPE tables need %.2f GB (the parameters "
                       "%.2f GB), more than the %.2f GB available (%s)", cfg_path, c->max_pos, rope / 1e9,
                       params / 1e9, avail / 1e9, bound);
    return err_set(err, "%s: the model needs %.2f GB (%.2f GB of parameters), more than the %.2f GB available (%s)",
                   cfg_path, (params + rope) / 1e9, params / 1e9, avail / 1e9, bound);
}

bool model_load(model *m, const char *dir, s2d_err *err) {
    char path[4096];
    path_join(path, sizeof path, dir, "config.json");
    model_config cfg;
    if (!model_config_load(path, &cfg, err)) return false;
    st_set *set = NULL;
    if (!st_open_dir(dir, &set, err)) return false;
    if (!check_weights(&cfg, set, path, dir, err) || !check_memory(&cfg, path, err)) {
        st_close(set);
        return false;
    }
    model_create(m, &cfg);
    size_t loaded = 0, loaded_bf16 = 0;
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
        loaded_bf16 += s->dtype == ST_BF16 ? t->numel : 0;
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
                     model_arch_of(cfg.arch)->model_type);
    }
    if (ok && loaded != expected_param_count(&cfg))
        ok = err_set(err, "%s: loaded %zu parameters, config.json implies %zu", dir, loaded,
                     expected_param_count(&cfg));
    st_close(set);
    if (staged) {
        if (ok) model_params_upload(m, params);
        free(params);
    }
    if (ok) m->source_bf16 = loaded_bf16 == loaded; /* saved outputs keep the source's dtype */
    if (!ok) model_free(m);
    else log_info("loaded %s: %s, %zu parameters", dir, model_arch_of(cfg.arch)->model_type, loaded);
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
    if (!ok) return false;
    /* generation_config.json as save_pretrained writes it from the config (a tokenizer directory's own one, copied
     * after, replaces it): transformers' generate() and vLLM read the stop ids from here */
    char gen[512], eos[256] = "null";
    if (m->cfg.n_eos == 1) snprintf(eos, sizeof eos, "%d", m->cfg.eos_ids[0]);
    else if (m->cfg.n_eos > 1) {
        size_t at = (size_t)snprintf(eos, sizeof eos, "[");
        for (int i = 0; i < m->cfg.n_eos; i++) at += (size_t)snprintf(eos + at, sizeof eos - at, "%s%d", i ? ", " : "", m->cfg.eos_ids[i]);
        snprintf(eos + at, sizeof eos - at, "]");
    }
    char bos[32] = "null";
    if (m->cfg.bos_id >= 0) snprintf(bos, sizeof bos, "%d", m->cfg.bos_id);
    snprintf(gen, sizeof gen, "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": %s,\n  \"eos_token_id\": %s\n}", bos, eos);
    path_join(path, sizeof path, dir, "generation_config.json");
    return write_text_atomic(path, gen, err);
}

typedef struct {
    const model *m;
    bool bf16;
} save_job;
static bool fill_model_dir(const char *tmp, void *ctx, s2d_err *err) {
    const save_job *j = ctx;
    return save_files(j->m, tmp, j->bf16, err);
}

bool model_save(const model *m, const char *dir, bool bf16, s2d_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return err_set(err, "%s: exists and is not a directory", dir);
        return save_files(m, dir, bf16, err); /* each file is replaced atomically */
    }
    /* A new directory appears only when complete. */
    save_job job = {m, bf16};
    return dir_build_atomic(dir, fill_model_dir, &job, err);
}
