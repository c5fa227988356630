/* model_internal.h: what the packed paths (model_forward.c) and the KV-cache paths (model_kv.c) share: the layer's
 * activations, the buffer carver and the layer itself. Private to src/model/. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

/* Activations of one layer over T rows (device memory). In inference mode one set is shared by all layers and
 * the residual is updated in place (x_in == x_mid == x_out); q_raw/k_raw alias q/k. */
typedef struct {
    float *x_in;   /* [T, H] residual entering the layer */
    float *rstd1;  /* [T] */
    float *xn1;    /* [T, H] input_layernorm output */
    float *q_raw;  /* [T, nh*hd] projection before q_norm (Qwen3; == q otherwise) */
    float *k_raw;  /* [T, nkv*hd] */
    float *rstd_q; /* [T*nh] (Qwen3) */
    float *rstd_k; /* [T*nkv] (Qwen3) */
    float *q;      /* [T, nh, hd] after q_norm + RoPE */
    float *k;      /* [T, nkv, hd] after k_norm + RoPE */
    float *v;      /* [T, nkv, hd] */
    float *att;    /* [T, nh*hd] attention output before o_proj */
    float *lse;    /* [T, nh] */
    float *x_mid;  /* [T, H] residual after attention */
    float *rstd2;  /* [T] */
    float *xn2;    /* [T, H] post_attention_layernorm output */
    float *gate;   /* [T, I] */
    float *up;     /* [T, I] */
    float *act;    /* [T, I] silu(gate) * up */
} layer_acts;

/* Carves buffers out of base (or only counts them when base is NULL), 64-byte aligned. */
typedef struct {
    float *base;
    size_t used; /* floats */
} carver;
float *mf_carve(carver *c, size_t n);
/* One layer's activations over T rows carved from c; x_shared != NULL: inference (the residual updated in
 * place); keep_x_in = false: x_in is set by the caller (recompute's shared set). */
void mf_layout_acts(carver *c, layer_acts *a, const model_config *cfg, int T, bool training, float *x_shared,
                    bool keep_x_in);

/* How a layer attends: packed sequences (training, scoring), or through the KV cache (prefill, decode). */
typedef enum { ATTN_PACKED, ATTN_PREFILL, ATTN_DECODE } attn_kind;
typedef struct {
    attn_kind kind;
    int n_seqs;
    const int *seq_start; /* ATTN_PACKED (host) */
    model_kv_cache *kv;   /* ATTN_PREFILL / ATTN_DECODE */
    /* ATTN_PREFILL: n_seqs sequences packed by seq_start (rows), sequence i appended to slot seq_slot[i] from
     * position seq_p0[i] */
    const int *seq_slot, *seq_p0;
    const int *slots;     /* ATTN_DECODE: [T] slot of each row (host) */
    const int *pos_h;     /* ATTN_DECODE: [T] position of each row (host) */
    int *ctx_len;         /* ATTN_DECODE scratch [T] (host) */
    const model_layer_view16 *w16; /* KV paths: bf16 views of the weights (model_kv_refresh_weights), or NULL */
} attn_mode;

/* Layer l over T rows: a->x_in -> x_out (the same code for every path). */
void mf_layer_forward(const model *m, int l, const layer_acts *a, float *x_out, int T, const int32_t *pos,
                      const attn_mode *mode);
/* Every token id in [0, vocab), or an error naming `what` and the position. */
bool mf_check_tokens(const model_config *c, const int32_t *tokens, int T, const char *what, s2d_err *err);
