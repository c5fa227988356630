/* model_config.c: HF config.json → model_config (Qwen3, Llama 3), presets, RoPE frequencies. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/* ---- parsing helpers: each error names the file and the key ---- */

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static bool get_int(const cJSON *obj, const char *key, bool required, int def, int min, int *out, const char *name,
                    s2d_err *err) {
    const cJSON *v = get(obj, key);
    if (!v) {
        if (required) return err_set(err, "%s: missing key '%s'", name, key);
        *out = def;
        return true;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < min ||
        v->valuedouble > 2147483647.0)
        return err_set(err, "%s: key '%s' must be an integer >= %d", name, key, min);
    *out = (int)v->valuedouble;
    return true;
}

static bool get_num(const cJSON *obj, const char *key, bool required, double def, double *out, const char *name,
                    s2d_err *err) {
    const cJSON *v = get(obj, key);
    if (!v) {
        if (required) return err_set(err, "%s: missing key '%s'", name, key);
        *out = def;
        return true;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0)
        return err_set(err, "%s: key '%s' must be a positive number", name, key);
    *out = v->valuedouble;
    return true;
}

static bool get_bool(const cJSON *obj, const char *key, bool def, bool *out, const char *name, s2d_err *err) {
    const cJSON *v = get(obj, key);
    if (!v) {
        *out = def;
        return true;
    }
    if (!cJSON_IsBool(v)) return err_set(err, "%s: key '%s' must be true or false", name, key);
    *out = cJSON_IsTrue(v);
    return true;
}

/* RoPE from an object holding rope_type (or the old "type") and the llama3 keys; theta comes in separately
 * for the old spelling. `where` names the key in messages ("rope_parameters" or "rope_scaling"). */
static bool parse_rope_object(const cJSON *r, const char *where, model_config *c, const char *name, s2d_err *err) {
    if (!cJSON_IsObject(r)) return err_set(err, "%s: key '%s' must be an object", name, where);
    const cJSON *type = get(r, "rope_type");
    if (!type) type = get(r, "type");
    const char *t = type && cJSON_IsString(type) ? type->valuestring : (type ? NULL : "default");
    if (!t) return err_set(err, "%s: key '%s.rope_type' must be a string", name, where);
    if (strcmp(t, "default") == 0) {
        c->rope_kind = ROPE_DEFAULT;
        return true;
    }
    if (strcmp(t, "llama3") != 0)
        return err_set(err, "%s: key '%s.rope_type' is \"%s\"; supported: \"default\", \"llama3\"", name, where, t);
    c->rope_kind = ROPE_LLAMA3;
    char key[96];
#define ROPE_NUM(field, k)                                                                                           \
    do {                                                                                                             \
        snprintf(key, sizeof key, "%s.%s", where, k);                                                                \
        const cJSON *v_ = get(r, k);                                                                                 \
        if (!v_) return err_set(err, "%s: missing key '%s' (needed by rope_type llama3)", name, key);                \
        if (!cJSON_IsNumber(v_) || !(v_->valuedouble > 0))                                                           \
            return err_set(err, "%s: key '%s' must be a positive number", name, key);                                \
        field = v_->valuedouble;                                                                                     \
    } while (0)
    double orig = 0;
    ROPE_NUM(c->rope_factor, "factor");
    ROPE_NUM(c->rope_low_freq_factor, "low_freq_factor");
    ROPE_NUM(c->rope_high_freq_factor, "high_freq_factor");
    ROPE_NUM(orig, "original_max_position_embeddings");
#undef ROPE_NUM
    if (orig != floor(orig) || orig > 1e9)
        return err_set(err, "%s: key '%s.original_max_position_embeddings' must be an integer", name, where);
    c->rope_orig_max_pos = (int)orig;
    if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
        return err_set(err, "%s: key '%s.high_freq_factor' must be greater than low_freq_factor", name, where);
    return true;
}

static bool parse_token_ids(const cJSON *root, model_config *c, const char *name, s2d_err *err) {
    const cJSON *b = get(root, "bos_token_id");
    c->bos_id = -1;
    if (b) {
        if (!cJSON_IsNumber(b) || b->valuedouble < 0 || b->valuedouble > INT32_MAX || b->valuedouble != floor(b->valuedouble))
            return err_set(err, "%s: key 'bos_token_id' must be a non-negative integer", name);
        c->bos_id = (int)b->valuedouble;
    }
    const cJSON *e = get(root, "eos_token_id");
    c->n_eos = 0;
    if (e) {
        const cJSON *item;
        if (cJSON_IsNumber(e)) {
            if (e->valuedouble < 0 || e->valuedouble > INT32_MAX || e->valuedouble != floor(e->valuedouble))
                return err_set(err, "%s: key 'eos_token_id' must be a non-negative integer", name);
            c->eos_ids[c->n_eos++] = (int)e->valuedouble;
        } else if (cJSON_IsArray(e)) {
            cJSON_ArrayForEach(item, e) {
                if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > INT32_MAX || item->valuedouble != floor(item->valuedouble))
                    return err_set(err, "%s: key 'eos_token_id' must hold non-negative integers", name);
                if (c->n_eos == MODEL_MAX_EOS)
                    return err_set(err, "%s: key 'eos_token_id' has more than %d ids", name, MODEL_MAX_EOS);
                c->eos_ids[c->n_eos++] = (int)item->valuedouble;
            }
        } else {
            return err_set(err, "%s: key 'eos_token_id' must be an integer or a list of integers", name);
        }
    }
    return true;
}

bool model_config_parse(const char *json_text, const char *name, model_config *c, s2d_err *err) {
    memset(c, 0, sizeof *c);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &end, 0);
    if (!root) {
        long off = end ? (long)(end - json_text) : 0;
        long line = 1;
        for (long i = 0; i < off; i++) line += json_text[i] == '\n';
        return err_set(err, "%s:%ld: invalid JSON", name, line);
    }
    bool ok = false;
    if (!cJSON_IsObject(root)) {
        err_set(err, "%s: expected a JSON object", name);
        goto done;
    }
    const cJSON *mt = get(root, "model_type");
    if (!mt || !cJSON_IsString(mt)) {
        err_set(err, "%s: missing key 'model_type' (a string: %s)", name, model_arch_names());
        goto done;
    }
    const model_arch_desc *desc = model_arch_find(mt->valuestring);
    if (!desc) {
        err_set(err, "%s: key 'model_type' is \"%s\"; supported: %s", name, mt->valuestring, model_arch_names());
        goto done;
    }
    c->arch = desc->arch;
    if (!get_int(root, "hidden_size", true, 0, 1, &c->hidden, name, err) ||
        !get_int(root, "num_hidden_layers", true, 0, 1, &c->n_layers, name, err) ||
        !get_int(root, "num_attention_heads", true, 0, 1, &c->n_heads, name, err) ||
        !get_int(root, "num_key_value_heads", false, c->n_heads, 1, &c->n_kv_heads, name, err) ||
        !get_int(root, "intermediate_size", true, 0, 1, &c->intermediate, name, err) ||
        !get_int(root, "vocab_size", true, 0, 1, &c->vocab, name, err) ||
        !get_int(root, "max_position_embeddings", false, 2048, 1, &c->max_pos, name, err) ||
        !get_bool(root, "tie_word_embeddings", false, &c->tie_embeddings, name, err))
        goto done;
    if (c->hidden % c->n_heads != 0 && !get(root, "head_dim")) {
        err_set(err, "%s: key 'head_dim' is absent and hidden_size %d is not a multiple of num_attention_heads %d",
                name, c->hidden, c->n_heads);
        goto done;
    }
    if (!get_int(root, "head_dim", false, c->hidden / c->n_heads, 2, &c->head_dim, name, err)) goto done;
    if (c->head_dim % 2 != 0) {
        err_set(err, "%s: key 'head_dim' must be even (RoPE rotates halves), got %d", name, c->head_dim);
        goto done;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        err_set(err, "%s: key 'num_key_value_heads' (%d) must divide num_attention_heads (%d)", name, c->n_kv_heads,
                c->n_heads);
        goto done;
    }
    double eps;
    if (!get_num(root, "rms_norm_eps", false, 1e-6, &eps, name, err)) goto done;
    c->rms_eps = (float)eps;
    bool flag;
    if (!get_bool(root, "attention_bias", false, &flag, name, err)) goto done;
    if (flag) {
        err_set(err, "%s: key 'attention_bias' is true; attention biases are not supported", name);
        goto done;
    }
    if (!get_bool(root, "mlp_bias", false, &flag, name, err)) goto done;
    if (flag) {
        err_set(err, "%s: key 'mlp_bias' is true; MLP biases are not supported", name);
        goto done;
    }
    if (!get_bool(root, "use_sliding_window", false, &flag, name, err)) goto done;
    if (flag) {
        err_set(err, "%s: key 'use_sliding_window' is true; sliding-window attention is not supported", name);
        goto done;
    }
    const cJSON *lt = get(root, "layer_types"), *ltype; /* transformers 5: per-layer attention kinds */
    if (lt && cJSON_IsArray(lt))
        cJSON_ArrayForEach(ltype, lt) if (!cJSON_IsString(ltype) || strcmp(ltype->valuestring, "full_attention") != 0) {
            err_set(err, "%s: key 'layer_types' holds \"%s\"; only full attention is supported", name,
                    cJSON_IsString(ltype) ? ltype->valuestring : "?");
            goto done;
        }
    const cJSON *act = get(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0)) {
        err_set(err, "%s: key 'hidden_act' must be \"silu\"", name);
        goto done;
    }
    /* RoPE: transformers v5 rope_parameters wins; else rope_theta + rope_scaling. */
    const cJSON *rp = get(root, "rope_parameters");
    if (rp) {
        if (!cJSON_IsObject(rp)) {
            err_set(err, "%s: key 'rope_parameters' must be an object", name);
            goto done;
        }
        double theta_top;
        if (!get_num(root, "rope_theta", false, 10000.0, &theta_top, name, err) ||
            !get_num(rp, "rope_theta", false, theta_top, &c->rope_theta, name, err))
            goto done;
        if (!parse_rope_object(rp, "rope_parameters", c, name, err)) goto done;
    } else {
        if (!get_num(root, "rope_theta", false, 10000.0, &c->rope_theta, name, err)) goto done;
        const cJSON *rs = get(root, "rope_scaling");
        c->rope_kind = ROPE_DEFAULT;
        if (rs && !parse_rope_object(rs, "rope_scaling", c, name, err)) goto done;
    }
    if (!parse_token_ids(root, c, name, err)) goto done;
    /* an id outside the vocabulary is this file's error (generate would blame --stop later) */
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] >= c->vocab) {
            err_set(err, "%s: key 'eos_token_id' holds %d, outside the vocabulary [0, %d) of vocab_size", name,
                    c->eos_ids[i], c->vocab);
            goto done;
        }
    if (c->bos_id >= c->vocab) {
        err_set(err, "%s: key 'bos_token_id' is %d, outside the vocabulary [0, %d) of vocab_size", name, c->bos_id,
                c->vocab);
        goto done;
    }
    ok = true;
done:
    cJSON_Delete(root);
    return ok;
}

bool model_config_load(const char *path, model_config *cfg, s2d_err *err) {
    char *text;
    size_t len;
    if (!read_file(path, &text, &len, err)) return false;
    bool ok = model_config_parse(text, path, cfg, err);
    free(text);
    return ok;
}

char *model_config_to_json(const model_config *c) {
    cJSON *root = cJSON_CreateObject();
    const model_arch_desc *desc = model_arch_of(c->arch);
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(desc->hf_architecture));
    cJSON_AddBoolToObject(root, "attention_bias", false);
    cJSON_AddNumberToObject(root, "attention_dropout", 0.0);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(root, "bos_token_id", c->bos_id);
    else cJSON_AddNullToObject(root, "bos_token_id");
    if (c->n_eos == 1) cJSON_AddNumberToObject(root, "eos_token_id", c->eos_ids[0]);
    else if (c->n_eos > 1) {
        cJSON *e = cJSON_AddArrayToObject(root, "eos_token_id");
        for (int i = 0; i < c->n_eos; i++) cJSON_AddItemToArray(e, cJSON_CreateNumber(c->eos_ids[i]));
    } else cJSON_AddNullToObject(root, "eos_token_id");
    cJSON_AddNumberToObject(root, "head_dim", c->head_dim);
    cJSON_AddStringToObject(root, "hidden_act", "silu");
    cJSON_AddNumberToObject(root, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(root, "initializer_range", 0.02);
    cJSON_AddNumberToObject(root, "intermediate_size", c->intermediate);
    cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_pos);
    if (desc->writes_mlp_bias_key) cJSON_AddBoolToObject(root, "mlp_bias", false);
    cJSON_AddStringToObject(root, "model_type", desc->model_type);
    cJSON_AddNumberToObject(root, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(root, "num_key_value_heads", c->n_kv_heads);
    /* Shortest decimal that reads back as the same float (1e-06, not 9.99999997e-07). */
    char eps[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(eps, sizeof eps, "%.*g", prec, (double)c->rms_eps);
        if (strtof(eps, NULL) == c->rms_eps) break;
    }
    cJSON_AddRawToObject(root, "rms_norm_eps", eps);
    /* Both spellings, as transformers v5 writes them, so older and newer readers agree. */
    cJSON *rp = cJSON_AddObjectToObject(root, "rope_parameters");
    cJSON_AddNumberToObject(rp, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(rp, "rope_type", c->rope_kind == ROPE_LLAMA3 ? "llama3" : "default");
    if (c->rope_kind == ROPE_LLAMA3) {
        cJSON_AddNumberToObject(rp, "factor", c->rope_factor);
        cJSON_AddNumberToObject(rp, "low_freq_factor", c->rope_low_freq_factor);
        cJSON_AddNumberToObject(rp, "high_freq_factor", c->rope_high_freq_factor);
        cJSON_AddNumberToObject(rp, "original_max_position_embeddings", c->rope_orig_max_pos);
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
        cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_orig_max_pos);
    } else {
        cJSON_AddNullToObject(root, "rope_scaling");
    }
    cJSON_AddNumberToObject(root, "rope_theta", c->rope_theta);
    cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    cJSON_AddBoolToObject(root, "use_cache", true);
    if (desc->writes_sliding_window_key) cJSON_AddBoolToObject(root, "use_sliding_window", false);
    cJSON_AddNumberToObject(root, "vocab_size", c->vocab);
    char *s = cJSON_Print(root);
    CHECK(s != NULL, "out of memory printing config.json");
    cJSON_Delete(root);
    char *copy = xstrdup(s);
    cJSON_free(s);
    return copy;
}

bool model_config_preset(const char *name, model_config *c, s2d_err *err) {
    memset(c, 0, sizeof *c);
    c->bos_id = -1;
    c->rms_eps = 1e-6f;
    c->rope_kind = ROPE_DEFAULT;
    if (strcmp(name, "qwen3-tiny") == 0 || strcmp(name, "llama-tiny") == 0 || strcmp(name, "qwen2-tiny") == 0) {
        c->hidden = 64, c->n_layers = 2, c->n_heads = 4, c->n_kv_heads = 2, c->head_dim = 32;
        c->intermediate = 128, c->vocab = 512, c->max_pos = 2048;
        if (name[0] == 'q') {
            c->arch = name[4] == '2' ? MODEL_QWEN2 : MODEL_QWEN3, c->rope_theta = 1e6, c->tie_embeddings = true;
        } else {
            c->arch = MODEL_LLAMA, c->rope_theta = 500000.0, c->tie_embeddings = false, c->rms_eps = 1e-5f;
            c->rope_kind = ROPE_LLAMA3, c->rope_factor = 8, c->rope_low_freq_factor = 1;
            c->rope_high_freq_factor = 4, c->rope_orig_max_pos = 256;
        }
    } else if (strcmp(name, "qwen3-small") == 0) {
        c->arch = MODEL_QWEN3, c->hidden = 256, c->n_layers = 4, c->n_heads = 4, c->n_kv_heads = 2;
        c->head_dim = 64, c->intermediate = 768, c->vocab = 4096, c->max_pos = 4096;
        c->rope_theta = 1e6, c->tie_embeddings = true;
    } else if (strcmp(name, "qwen3-0.6b") == 0 || strcmp(name, "qwen3-1.7b") == 0) {
        /* Qwen/Qwen3-0.6B and Qwen/Qwen3-1.7B config.json */
        bool small = strcmp(name, "qwen3-0.6b") == 0;
        c->arch = MODEL_QWEN3, c->hidden = small ? 1024 : 2048, c->n_layers = 28, c->n_heads = 16;
        c->n_kv_heads = 8, c->head_dim = 128, c->intermediate = small ? 3072 : 6144, c->vocab = 151936;
        c->max_pos = 40960, c->rope_theta = 1000000.0, c->tie_embeddings = true;
        c->bos_id = 151643, c->n_eos = 1, c->eos_ids[0] = 151645;
    } else if (strcmp(name, "qwen2.5-1.5b") == 0) {
        /* Qwen/Qwen2.5-1.5B config.json (also the shape of Qwen2.5-Math-1.5B and DeepSeek-R1-Distill-Qwen-1.5B,
         * which differ in rope_theta / max_position_embeddings / tying only) */
        c->arch = MODEL_QWEN2, c->hidden = 1536, c->n_layers = 28, c->n_heads = 12, c->n_kv_heads = 2;
        c->head_dim = 128, c->intermediate = 8960, c->vocab = 151936, c->max_pos = 32768;
        c->rope_theta = 1000000.0, c->tie_embeddings = true, c->bos_id = 151643, c->n_eos = 1;
        c->eos_ids[0] = 151643;
    } else if (strcmp(name, "llama3.2-1b") == 0) {
        /* meta-llama/Llama-3.2-1B config.json */
        c->arch = MODEL_LLAMA, c->hidden = 2048, c->n_layers = 16, c->n_heads = 32, c->n_kv_heads = 8;
        c->head_dim = 64, c->intermediate = 8192, c->vocab = 128256, c->max_pos = 131072, c->rms_eps = 1e-5f;
        c->rope_theta = 500000.0, c->tie_embeddings = true, c->bos_id = 128000, c->n_eos = 1;
        c->eos_ids[0] = 128001;
        c->rope_kind = ROPE_LLAMA3, c->rope_factor = 32, c->rope_low_freq_factor = 1;
        c->rope_high_freq_factor = 4, c->rope_orig_max_pos = 8192;
    } else {
        return err_set(err,
                       "unknown preset '%s' (choose qwen3-tiny, qwen2-tiny, llama-tiny, qwen3-small, qwen3-0.6b, "
                       "qwen3-1.7b, qwen2.5-1.5b, llama3.2-1b)",
                       name);
    }
    return true;
}

void model_rope_inv_freq(const model_config *c, double *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* HF computes this in fp32: 1 / theta^(2i/d). */
        float f = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / c->head_dim));
        inv_freq[i] = f;
    }
    if (c->rope_kind != ROPE_LLAMA3) return;
    /* transformers _compute_llama3_parameters: long wavelengths divided by factor, short kept, a smooth blend
     * in between. */
    double old_ctx = c->rope_orig_max_pos, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
    for (int i = 0; i < half; i++) {
        double f = inv_freq[i], wavelen = 2 * M_PI / f;
        double scaled = wavelen > low_freq_wavelen ? f / c->rope_factor : f;
        bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        if (medium) {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            scaled = (1 - smooth) * scaled / c->rope_factor + smooth * scaled;
        }
        inv_freq[i] = (float)scaled;
    }
}
