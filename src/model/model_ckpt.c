/* model_ckpt.c: the bridge between s2d models and the checkpoint arrays of io/h5io.c. */
#include "model/model_ckpt.h"

#include <stdlib.h>

#include "ops/ops.h"

/* ckpt_tensor rows for a model's tensor table (names point into it). */
static ckpt_tensor *tensor_table(const model *m) {
    ckpt_tensor *t = xcalloc((size_t)(m->n_tensors ? m->n_tensors : 1), sizeof *t);
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *mt = &m->tensors[i];
        t[i] = (ckpt_tensor){.name = mt->name, .ndim = mt->ndim, .shape = {mt->shape[0], mt->shape[1]},
                             .numel = mt->numel, .offset = mt->offset};
    }
    return t;
}

static bool binding_make(const char *config_json, const char *where, ckpt_model *cm, s2d_err *err) {
    model_config cfg;
    if (!model_config_parse(config_json, where, &cfg, err)) return false;
    model *m = xcalloc(1, sizeof *m);
    model_create_on(m, &cfg, ops_cpu()); /* checkpoint models are host copies (read into directly) */
    cm->object = m;
    cm->params = m->params;
    cm->n_params = m->n_params;
    cm->tensors = tensor_table(m);
    cm->n_tensors = m->n_tensors;
    return true;
}

static void binding_release(ckpt_model *cm) {
    model *m = cm->object;
    if (m) {
        model_free(m);
        free(m);
    }
    free((void *)cm->tensors);
    cm->object = NULL, cm->tensors = NULL, cm->params = NULL;
}

const ckpt_binding model_ckpt_binding = {.make = binding_make, .release = binding_release};

void model_ckpt_view(const char *name, const model *m, bool bf16, ckpt_model *out) {
    *out = (ckpt_model){.name = (char *)name, .config_json = model_config_to_json(&m->cfg), .n_params = m->n_params,
                        .params = m->params, .tensors = tensor_table(m), .n_tensors = m->n_tensors, .bf16 = bf16};
}

void model_ckpt_view_free(ckpt_model *cm) {
    free(cm->config_json);
    free((void *)cm->tensors);
    cm->config_json = NULL, cm->tensors = NULL;
}

bool model_ckpt_load(const char *path, const char *name, model *m, bool *was_bf16, s2d_err *err) {
    ckpt_model cm;
    if (!ckpt_load_model(path, name, &model_ckpt_binding, &cm, err)) return false;
    model *loaded = cm.object;
    *m = *loaded; /* move the model out by value; its buffers stay */
    free(loaded);
    cm.object = NULL;
    if (was_bf16) *was_bf16 = cm.bf16;
    free((void *)cm.tensors);
    cm.tensors = NULL;
    ckpt_model_free(&cm);
    return true;
}
