/* h5io_summary.c: the human-readable summary of an s2d HDF5 file (s2d inspect). */
#include "io/h5io_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/* ---- summary (s2d inspect) ---- */

static void print_dims(FILE *out, hid_t d) {
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8];
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank < 0 || rank > 8) rank = 0;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    fputc('[', out);
    for (int i = 0; i < rank; i++) fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    fputc(']', out);
    H5Sclose(sp);
}

/* ", qwen3: hidden 64, layers 2, heads 4/2, vocab 512" from a config.json text (nothing when it does not parse). */
static void summary_model_config(const char *json, FILE *out) {
    cJSON *c = json ? cJSON_Parse(json) : NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "model_type");
    const char *keys[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"};
    double v[5];
    bool ok = cJSON_IsString(type);
    for (int i = 0; i < 5 && ok; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(c, keys[i]);
        ok = cJSON_IsNumber(x);
        if (ok) v[i] = x->valuedouble;
    }
    if (ok)
        fprintf(out, ", %s: hidden %.0f, layers %.0f, heads %.0f/%.0f, vocab %.0f", type->valuestring, v[0], v[1], v[2],
                v[3], v[4]);
    cJSON_Delete(c);
}

static bool summary_checkpoint(hid_t f, const char *path, bool list_tensors, FILE *out, s2d_err *err) {
    int64_t version = 0, complete = 0, stage = 0, step = 0;
    h5_attr_read_i64(f, "format_version", &version);
    h5_attr_read_i64(f, "complete", &complete);
    h5_attr_read_i64(f, "stage_index", &stage);
    h5_attr_read_i64(f, "step", &step);
    char *stage_name = h5_attr_read_str(f, "stage_name");
    fprintf(out, "kind: checkpoint (format %s version %lld, %s)\n", H5_CKPT_FORMAT, (long long)version,
            complete == 1 ? "complete" : "INCOMPLETE");
    fprintf(out, "stage: %lld (%s)\nstep: %lld\n", (long long)stage, stage_name ? stage_name : "", (long long)step);
    free(stage_name);
    char **names = NULL;
    int n = 0;
    hid_t mg = h5_link_exists(f, "models") ? H5Gopen2(f, "models", H5P_DEFAULT) : -1;
    if (mg < 0 || !h5_group_names(mg, &names, &n)) {
        if (mg >= 0) H5Gclose(mg);
        return err_set(err, "%s: group /models is missing or unreadable", path);
    }
    fprintf(out, "models: %d\n", n);
    for (int i = 0; i < n; i++) {
        hid_t g = H5Gopen2(mg, names[i], H5P_DEFAULT);
        int64_t np = 0, nt = 0;
        h5_attr_read_i64(g, "n_params", &np);
        h5_attr_read_i64(g, "n_tensors", &nt);
        char *dtype = h5_attr_read_str(g, "dtype"), *json = h5_attr_read_str(g, "config_json");
        fprintf(out, "model %s: %lld tensors, %lld parameters, %s", names[i], (long long)nt, (long long)np,
                dtype ? dtype : "?");
        summary_model_config(json, out);
        char og[256];
        snprintf(og, sizeof og, "/optim/%s", names[i]);
        if (h5_link_exists(f, "optim") && h5_link_exists(f, og)) {
            hid_t o = H5Gopen2(f, og, H5P_DEFAULT);
            int64_t ostep = 0;
            h5_attr_read_i64(o, "step", &ostep);
            fprintf(out, ", optimizer state (AdamW step %lld)", (long long)ostep);
            H5Gclose(o);
        }
        fputc('\n', out);
        if (list_tensors) {
            char **tn = NULL;
            int k = 0;
            if (h5_group_names(g, &tn, &k))
                for (int j = 0; j < k; j++) {
                    hid_t d = H5Dopen2(g, tn[j], H5P_DEFAULT);
                    if (d < 0) continue;
                    fprintf(out, "  %s ", tn[j]);
                    print_dims(out, d);
                    fputc('\n', out);
                    H5Dclose(d);
                }
            h5_free_names(tn, k);
        }
        free(dtype);
        free(json);
        H5Gclose(g);
    }
    h5_free_names(names, n);
    H5Gclose(mg);
    if (h5_link_exists(f, "state")) {
        hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
        if (g >= 0 && h5_group_names(g, &names, &n)) {
            for (int i = 0; i < n; i++) {
                hid_t d = H5Dopen2(g, names[i], H5P_DEFAULT);
                if (d < 0) continue;
                hid_t sp = H5Dget_space(d);
                hssize_t np = H5Sget_simple_extent_npoints(sp);
                fprintf(out, "state %s:", names[i]);
                if (np > 0 && np <= 16) {
                    uint64_t v[16];
                    if (H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0)
                        for (hssize_t j = 0; j < np; j++) fprintf(out, " %llu", (unsigned long long)v[j]);
                } else {
                    fprintf(out, " (%lld values)", (long long)np);
                }
                fputc('\n', out);
                H5Sclose(sp);
                H5Dclose(d);
            }
            h5_free_names(names, n);
        }
        if (g >= 0) H5Gclose(g);
    }
    char *config = h5_link_exists(f, "config") ? h5_text_dataset_read(f, "config", NULL) : NULL;
    if (config) {
        fprintf(out, "config (first lines):\n");
        const char *p = config;
        for (int line = 0; line < 12 && *p; line++) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(out, "  %.*s\n", len, p);
            p += len + (nl ? 1 : 0);
        }
        if (*p) fprintf(out, "  ...\n");
        free(config);
    }
    return true;
}

static bool summary_rollouts(const char *path, FILE *out, s2d_err *err) {
    int64_t *stage = NULL, *step = NULL, *offs = NULL;
    float *reward = NULL;
    size_t n_steps = 0, n2 = 0, n_off = 0, n_rew = 0;
    bool ok = h5_read_i64(path, "steps/stage", &stage, &n_steps, err) && h5_read_i64(path, "steps/step", &step, &n2, err) &&
              h5_read_i64(path, "seqs/offsets", &offs, &n_off, err) &&
              h5_read_f32(path, "seqs/reward", &reward, &n_rew, err);
    if (ok && (n2 != n_steps || n_off != n_rew + 1))
        ok = err_set(err, "%s: inconsistent rollout log (%zu steps vs %zu, %zu offsets for %zu sequences)", path, n_steps,
                     n2, n_off, n_rew);
    if (ok) {
        double sum = 0;
        size_t counted = 0;
        for (size_t i = 0; i < n_rew; i++)
            if (!isnan(reward[i])) sum += reward[i], counted++;
        fprintf(out, "kind: rollout log (format %s)\n", H5_ROLLOUT_FORMAT);
        fprintf(out, "steps: %zu\nsequences: %zu\ntokens: %lld\n", n_steps, n_rew, (long long)offs[n_off - 1]);
        if (counted) fprintf(out, "mean reward: %.6g (over %zu sequences)\n", sum / (double)counted, counted);
        else fprintf(out, "mean reward: none recorded\n");
        if (n_steps)
            fprintf(out, "first: stage %lld step %lld\nlast: stage %lld step %lld\n", (long long)stage[0],
                    (long long)step[0], (long long)stage[n_steps - 1], (long long)step[n_steps - 1]);
    }
    free(stage);
    free(step);
    free(offs);
    free(reward);
    return ok;
}

static bool summary_metrics(hid_t f, const char *path, FILE *out, s2d_err *err) {
    char *fields = h5_attr_read_str(f, "fields");
    int64_t *step = NULL;
    size_t n = 0;
    if (!fields) return err_set(err, "%s: metrics table without a fields attribute", path);
    bool ok = h5_read_i64(path, "step", &step, &n, err);
    if (ok) {
        fprintf(out, "kind: metrics table (format %s)\nrows: %zu\nfields: %s\n", H5_METRICS_FORMAT, n, fields);
        if (n) {
            fprintf(out, "last row: step %lld", (long long)step[n - 1]);
            char *save = NULL, *copy = xstrdup(fields);
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                double *col = NULL;
                size_t k = 0;
                if (h5_read_f64(path, tok, &col, &k, err) && k == n) fprintf(out, ", %s %.6g", tok, col[n - 1]);
                free(col);
            }
            free(copy);
            fputc('\n', out);
        }
    }
    free(fields);
    free(step);
    return ok;
}

bool h5_summary(const char *path, bool list_tensors, FILE *out, s2d_err *err) {
    char *format = NULL;
    if (!h5_file_format(path, &format, err)) return false;
    hid_t f = h5_open_ro(path, err);
    if (f < 0) {
        free(format);
        return false;
    }
    fprintf(out, "file: %s\n", path);
    if (strcmp(format, H5_CKPT_FORMAT) == 0) /* h5_open_ro refused a damaged seal: intact or absent here */
        fprintf(out, "seal: %s\n", h5_seal_check(path, NULL) == 1 ? "intact (HDF5 structure checked before opening)"
                                                                   : "none (written before seals; HDF5's checks only)");
    bool ok;
    if (strcmp(format, H5_CKPT_FORMAT) == 0) ok = summary_checkpoint(f, path, list_tensors, out, err);
    else if (strcmp(format, H5_ROLLOUT_FORMAT) == 0) ok = summary_rollouts(path, out, err);
    else if (strcmp(format, H5_METRICS_FORMAT) == 0) ok = summary_metrics(f, path, out, err);
    else ok = err_set(err, "%s: unknown s2d file format '%s'", path, format);
    H5Fclose(f);
    free(format);
    return ok;
}
