/* model_spec.h: the tensor-spec table behind model.h's tensor table (private to src/model). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

/* A tensor dimension in terms of the config. */
typedef enum { DIM_NONE = 0, DIM_H, DIM_QD, DIM_KVD, DIM_I, DIM_V, DIM_HD } model_dim;
/* When a tensor exists: always, or under a descriptor flag / the config's tying. */
typedef enum { WHEN_ALWAYS = 0, WHEN_QK_NORM, WHEN_QKV_BIAS, WHEN_UNTIED } model_when;

typedef struct {
    const char *name;   /* HF name; per-layer names hold one %d (the layer index) */
    bool per_layer;
    tensor_kind kind;
    model_dim d0, d1;   /* shape [d0] or [d0, d1] (HF layout: [out, in] for linears) */
    model_when when;
    size_t view_offset; /* offsetof of its float * in model_layer_view (per layer) or model_view */
} model_tensor_spec;

extern const model_tensor_spec MODEL_SPECS[];
extern const int MODEL_N_SPECS;

int64_t model_spec_dim(const model_config *c, model_dim d);
bool model_spec_applies(const model_config *c, const model_tensor_spec *sp);
