/* model_ckpt.h: s2d models in checkpoints. io/h5io.h stores models as named arrays; this turns a model into
 * those arrays (for ckpt_save) and gives the binding that builds a host model from a stored config.json (for
 * ckpt_load and ckpt_load_model). */
#pragma once
#include "io/h5io.h"
#include "model/model.h"

/* Builds a host (CPU backend) model from the config; ckpt_model.object is the model. */
extern const ckpt_binding model_ckpt_binding;

/* The arrays of m (its parameters must be in host memory) under `name`, for ckpt_save; the config text and tensor
 * table are malloc'd (model_ckpt_view_free); params point into m. */
void model_ckpt_view(const char *name, const model *m, bool bf16, ckpt_model *out);
void model_ckpt_view_free(ckpt_model *cm);

/* Loads model `name` of a checkpoint into m (host memory, model_create'd; the caller model_free's it).
 * *was_bf16 (may be NULL) = stored as bf16. */
bool model_ckpt_load(const char *path, const char *name, model *m, bool *was_bf16, s2d_err *err);
