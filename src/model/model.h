/* model.h: Qwen3 / Llama 3 decoder-only transformers through the backend seam (ops.h).
 *
 * Architecture is data: model_config (from HF config.json) → a tensor table (HF names, shapes, offsets into
 * ONE contiguous params buffer). Gradients (and AdamW m, v, owned by algo/optim) are buffers of the same
 * length with the same offsets, so tensor i of any of them starts at tensors[i].offset.
 *
 * Device: a model lives on one backend queue (m->q, the process default of ops_default() when it is created):
 * params, grads, the RoPE tables, workspaces and KV caches are device memory of that queue, and every tensor
 * operation is an ops.h call on it. Host code reads or writes parameters only through model_params_download /
 * model_params_upload (or ops_host_ptr on host-memory backends).
 *
 * Batches are PACKED: n_seqs sequences laid end to end, no padding; each sequence has its own positions
 * 0..n_i-1 and its own causal mask. A "row" is a token index t in [0, T) of the packed batch.
 *
 * Typical training use:
 *     model m; model_load(&m, dir, &err); model_alloc_grads(&m);
 *     model_ws *ws = model_ws_new(&m, max_tokens, true);
 *     model_forward(&m, ws, &batch, &err);            // hidden states + saved activations
 *     model_token_logprobs_from_ws(&m, ws, logp);      // or model_logits_chunks(..., cb)
 *     model_zero_grads(&m);
 *     model_backward_logprobs(&m, ws, dlogp);          // accumulates into m.grads
 * Inference: model_token_logprobs(&m, ws, &batch, logp, &err) in one call (ws may be inference-only).
 * Generation: model_kv_cache + model_prefill + model_decode_step (see the bottom of this file).
 *
 * Threading: the backend parallelises inside ops; the model functions themselves are not re-entrant on one ws/kv. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "ops/ops.h"

typedef enum { MODEL_QWEN3 = 0, MODEL_LLAMA = 1, MODEL_QWEN2 = 2 } model_arch;
typedef enum { ROPE_DEFAULT = 0, ROPE_LLAMA3 = 1 } rope_type;

#define MODEL_MAX_EOS 8

typedef struct {
    model_arch arch;           /* from "model_type": "qwen3" | "qwen2" | "llama" (model_arch_desc) */
    int hidden;                /* hidden_size */
    int n_layers;              /* num_hidden_layers */
    int n_heads;               /* num_attention_heads */
    int n_kv_heads;            /* num_key_value_heads (default n_heads) */
    int head_dim;              /* head_dim, or hidden / n_heads when absent */
    int intermediate;          /* intermediate_size */
    int vocab;                 /* vocab_size */
    int max_pos;               /* max_position_embeddings */
    float rms_eps;             /* rms_norm_eps */
    bool tie_embeddings;       /* tie_word_embeddings (default false) */
    int bos_id;                /* bos_token_id, -1 when absent */
    int n_eos;                 /* eos_token_id: an int or a list; 0 when absent */
    int eos_ids[MODEL_MAX_EOS];
    /* RoPE: rope_theta + rope_scaling (old spelling) or rope_parameters (transformers v5). */
    double rope_theta;
    rope_type rope_kind;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor; /* llama3 only */
    int rope_orig_max_pos;                                           /* llama3 only */
} model_config;

/* Parses HF config.json text; `name` (the file path) appears in errors, which name the key. */
bool model_config_parse(const char *json_text, const char *name, model_config *cfg, s2d_err *err);
bool model_config_load(const char *path, model_config *cfg, s2d_err *err);
/* config.json text (malloc'd, caller frees) in the HF spelling; parse(to_json(c)) == c. */
char *model_config_to_json(const model_config *cfg);
/* Named presets for init-model: qwen3-tiny, qwen2-tiny, llama-tiny, qwen3-small, qwen3-0.6b, qwen3-1.7b,
 * qwen2.5-1.5b, llama3.2-1b. */
bool model_config_preset(const char *name, model_config *cfg, s2d_err *err);
/* Inverse frequencies of RoPE [head_dim/2], including llama3 scaling (as HF _compute_llama3_parameters). */
void model_rope_inv_freq(const model_config *cfg, double *inv_freq /* [head_dim/2] */);

/* ---- architectures as data (model_arch.c) ----
 * One descriptor per architecture; the shared tensor-spec table says which tensors exist for which
 * descriptor flags, their shapes from the config and their place in the layer view. Model code asks the
 * descriptor (q/k norm? q/k/v bias?), never for an architecture by name. Adding an architecture of this family
 * is one row here and a config preset. */
typedef struct {
    model_arch arch;
    const char *model_type;       /* HF config.json "model_type" */
    const char *hf_architecture;  /* HF config.json "architectures"[0] */
    bool qk_norm;                 /* per-head RMSNorm of q and k over head_dim, before RoPE (Qwen3) */
    bool qkv_bias;                /* q_proj, k_proj, v_proj have biases (Qwen2 / Qwen2.5) */
    bool writes_mlp_bias_key;     /* config.json carries "mlp_bias": false (Llama) */
    bool writes_sliding_window_key; /* config.json carries "use_sliding_window": false (Qwen) */
    const char *chat_template;    /* default chat template name (text/chat.h) */
    const char *const *stop_tokens; /* default stop token strings, NULL-terminated */
} model_arch_desc;

const model_arch_desc *model_arch_of(model_arch arch);
/* By HF model_type; NULL when unsupported (the error lists model_arch_names()). */
const model_arch_desc *model_arch_find(const char *model_type);
const char *model_arch_names(void); /* "\"qwen3\", \"qwen2\", \"llama\"" */

typedef enum { TENSOR_EMBEDDING = 0, TENSOR_NORM = 1, TENSOR_LINEAR = 2, TENSOR_BIAS = 3 } tensor_kind;

typedef struct {
    char name[96];     /* HF name, e.g. "model.layers.3.self_attn.q_proj.weight" */
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* [out, in] for linear (HF layout), [vocab, hidden] for the embedding, [n] for norms */
    size_t numel;
    size_t offset;     /* in floats, into params / grads / optimizer buffers */
    size_t span;       /* floats up to the next tensor (numel rounded up to 16: every tensor starts 64-byte aligned) */
    tensor_kind kind;
    int spec;          /* row of the tensor-spec table it was made from */
    int layer;         /* -1 for embedding, final norm, lm_head */
} model_tensor;

/* Views of one parameter-shaped buffer (params or grads). lm_head == embed when tied. */
typedef struct {
    float *attn_norm; /* [H] input_layernorm */
    float *wq;        /* [n_heads*head_dim, H] */
    float *wk;        /* [n_kv*head_dim, H] */
    float *wv;        /* [n_kv*head_dim, H] */
    float *bq;        /* [n_heads*head_dim] (qkv_bias only, else NULL) */
    float *bk;        /* [n_kv*head_dim] (qkv_bias only, else NULL) */
    float *bv;        /* [n_kv*head_dim] (qkv_bias only, else NULL) */
    float *wo;        /* [H, n_heads*head_dim] */
    float *q_norm;    /* [head_dim] (qk_norm only, else NULL) */
    float *k_norm;    /* [head_dim] (qk_norm only, else NULL) */
    float *mlp_norm;  /* [H] post_attention_layernorm */
    float *w_gate;    /* [I, H] */
    float *w_up;      /* [I, H] */
    float *w_down;    /* [H, I] */
} model_layer_view;

typedef struct {
    float *embed;      /* [V, H] model.embed_tokens.weight */
    float *final_norm; /* [H] model.norm.weight */
    float *lm_head;    /* [V, H] lm_head.weight, or == embed when tied */
    model_layer_view *layers; /* [n_layers] */
} model_view;

/* The same views over a bf16 copy of the parameters (generation weights; same offsets). */
typedef struct {
    const uint16_t *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
} model_layer_view16;

typedef struct {
    model_config cfg;
    ops_queue *q;          /* the backend queue every buffer below belongs to */
    model_tensor *tensors; /* [n_tensors], in HF order: embed, layers..., final norm, lm_head (untied) */
    int n_tensors;
    size_t n_params;       /* floats in params (= sum of numel) */
    float *params;         /* [n_params] device memory, 64-byte aligned */
    float *grads;          /* [n_params] device memory, or NULL until model_alloc_grads */
    model_view w;          /* views into params */
    model_view g;          /* views into grads (all NULL until model_alloc_grads) */
    bool source_bf16;      /* loaded from BF16 safetensors: saved copies default to BF16 too */
    float *rope_cos;       /* [max_pos, head_dim/2] device memory */
    float *rope_sin;       /* [max_pos, head_dim/2] device memory */
} model;

/* Builds the tensor table for cfg and allocates params (zeroed) on ops_default(). Dies only on OOM. */
void model_create(model *m, const model_config *cfg);
void model_create_on(model *m, const model_config *cfg, ops_queue *q);
/* Parameters of a model of this config (the sum of its tensors' elements, no alignment padding): what FLOPs
 * estimates count. */
size_t model_config_params(const model_config *c);
/* Host copies of the parameters [n_params] (the backend's buffers are not touched otherwise). */
void model_params_download(const model *m, float *host);
void model_params_upload(model *m, const float *host);
/* dst (created with src's config, on any queue) gets src's parameters. */
void model_params_copy(model *dst, const model *src);
void model_free(model *m);
/* Normal(0, 0.02) for embeddings and linears, 1 for norm weights, from Philox stream (seed, tensor index):
 * the same seed always gives the same model, independent of thread count. */
void model_init_random(model *m, uint64_t seed);
/* Loads DIR/config.json and DIR/model.safetensors (or the sharded DIR/model.safetensors.index.json).
 * Errors name the file and the tensor: missing, wrong shape, unexpected, wrong parameter count. */
bool model_load(model *m, const char *dir, s2d_err *err);
/* Writes DIR/config.json, DIR/model.safetensors and DIR/generation_config.json (bos/eos from the config) atomically
 * (creates DIR); bf16 stores weights as BF16. */
bool model_save(const model *m, const char *dir, bool bf16, s2d_err *err);
void model_alloc_grads(model *m);
void model_free_grads(model *m);
void model_zero_grads(model *m);
const model_tensor *model_find_tensor(const model *m, const char *name); /* NULL if none */

/* A packed batch: sequence i is tokens[seq_start[i] .. seq_start[i+1]), positions restart at 0. */
typedef struct {
    int n_seqs;
    const int *seq_start;   /* [n_seqs+1], seq_start[0] = 0, non-decreasing */
    const int32_t *tokens;  /* [T = seq_start[n_seqs]] */
} model_batch;

/* Workspace: activation memory for up to max_tokens packed tokens, allocated once (size logged).
 * training = true keeps activations for model_backward_*; false reuses one layer's. recompute (training only):
 * keep only each layer's input and recompute the layer's activations during the backward pass (per-layer
 * checkpointing: the gradients are bitwise those without it, the activation memory ~n_layers times smaller). */
typedef struct model_ws model_ws;
typedef enum { RECOMPUTE_NONE = 0, RECOMPUTE_LAYER = 1 } model_recompute;
model_ws *model_ws_new(const model *m, int max_tokens, bool training);
model_ws *model_ws_new_recompute(const model *m, int max_tokens, bool training, model_recompute recompute);
void model_ws_free(model_ws *ws);
/* Backward passes on ws call fn(user, lo, hi) each time floats [lo, hi) of m->grads are final for that pass,
 * highest offsets first: the tensors after the layers (final norm, an untied LM head), then each layer from the
 * last to the first, then the tensors before them (the embedding, a tied LM head). The ranges tile the
 * gradient buffer (alignment padding included). A GPU backend's ops may still be queued when fn runs: fn must
 * work through the same queue. fn NULL: none (the default). Used to reduce gradients while the backward runs. */
typedef void (*model_grad_ready_fn)(void *user, size_t lo, size_t hi);
void model_ws_set_grad_hook(model_ws *ws, model_grad_ready_fn fn, void *user);
/* Bytes of activations kept for the backward pass (the part recompute shrinks). */
size_t model_ws_activation_bytes(const model_ws *ws);

/* Runs the decoder over the batch; keeps final hidden states (after the final norm) in ws.
 * Errors: T > max_tokens, a token id out of [0, vocab) (names the token and its position), bad seq_start. */
bool model_forward(const model *m, model_ws *ws, const model_batch *batch, s2d_err *err);

/* The vocabulary-wide work of the last forward's batch, chunk by chunk (logits recomputed per chunk, never
 * [T, V] at once): op describes it (ops.h ops_vocab_op: the log-prob of the next token, forward KL, the
 * teacher's top-k or full log-softmax); the chunk scratch fields of op are filled in here. */
void model_vocab_forward(const model *m, model_ws *ws, ops_vocab_op *op);
/* After model_forward on a training ws: op with want_grad (its gradient replaces each chunk's logits), then the
 * backward through the LM head and every layer, ACCUMULATING into m->grads. */
void model_vocab_backward(model *m, model_ws *ws, ops_vocab_op *op);
/* The same with a per-token term added to the rows' gradient (VOCAB_RKL_*: opd's sampled reference part):
 * op->target = the batch's next tokens, op->dlogp = dlogp (host [T], staged to the device). */
void model_vocab_backward_dlogp(model *m, model_ws *ws, ops_vocab_op *op, const float *dlogp);

/* LM-head callback (tests and diagnostics), called for consecutive row ranges [r0, r1) of the last forward's
 * batch, in order, with HOST logits [r1-r0, V] (downloaded first on device backends). With want_grad (inside
 * model_backward_logits) the callback must overwrite logits in place with d(loss)/d(logits) for those rows
 * (zeros for rows that do not contribute). */
typedef void (*model_logits_fn)(void *user, int r0, int r1, float *logits, bool want_grad);

/* After model_forward: calls fn over all rows chunk by chunk (never materialises [T, V]). */
void model_logits_chunks(const model *m, model_ws *ws, model_logits_fn fn, void *user);
/* After model_forward on a training ws: recomputes logits per chunk, calls fn(want_grad=true), and
 * backpropagates through the LM head and every layer, ACCUMULATING into m->grads (call model_zero_grads
 * yourself). Requires model_alloc_grads. */
void model_backward_logits(model *m, model_ws *ws, model_logits_fn fn, void *user);

/* After model_forward: logp[t] = log p(tokens[t+1] | tokens of its sequence up to t) for every row t that is
 * not the last of its sequence; logp[t] = 0 at the last row of each sequence. logp: [T]. */
void model_token_logprobs_from_ws(const model *m, model_ws *ws, float *logp);
/* The same under log_softmax(logits / temperature) (the distribution sampled at that temperature, as verl's
 * log-probs); temperature 0 or 1: bitwise model_token_logprobs_from_ws. */
void model_token_logprobs_temp(const model *m, model_ws *ws, float temperature, float *logp);
/* model_forward + model_token_logprobs_from_ws. */
bool model_token_logprobs(const model *m, model_ws *ws, const model_batch *batch, float *logp, s2d_err *err);
/* After model_forward on a training ws: given dlogp[t] = d(loss)/d(logp[t]) ([T]; entries at the last row of
 * each sequence are ignored), accumulates d(loss)/d(params) into m->grads. */
void model_backward_logprobs(model *m, model_ws *ws, const float *dlogp);
/* The same for log-probs taken at a temperature (model_token_logprobs_temp). */
void model_backward_logprobs_temp(model *m, model_ws *ws, float temperature, const float *dlogp);

/* ---- KV cache for generation ----
 * n_slots independent sequences of up to max_len positions each. One contiguous buffer
 * [n_layers][2 (K,V)][n_slots][max_len][n_kv_heads][head_dim]. A slot's results never depend on which other
 * slots are active (every reduction is within a row). */
typedef struct model_kv_scratch model_kv_scratch;
typedef struct {
    int n_slots, max_len;
    int *len;            /* [n_slots] positions filled */
    float *buf;          /* see above; device memory */
    size_t bytes;
    model_kv_scratch *scratch; /* decode/prefill activations, sized for max(n_slots rows, max_len tokens) */
    bool bf16_weights;   /* prefill/decode read the bf16 copy of the weights (model_kv_refresh_weights) */
    ops_queue *q;        /* the model's queue */
} model_kv_cache;

bool model_kv_init(model_kv_cache *kv, const model *m, int n_slots, int max_len, s2d_err *err);
void model_kv_free(model_kv_cache *kv);
/* bf16 weights for generation. When EVERY parameter of m is exactly representable in bf16 (the low 16 bits of
 * each fp32 word are zero, as for models loaded from HF bf16 checkpoints or saved with --dtype bf16), keeps a
 * bf16 copy of m->params (one contiguous buffer, same offsets) in the cache, and prefill/decode run their
 * linears and LM head from it: op_linear_rows with bf16 weights widens them exactly and sums in the fp32 order, so
 * every logit and cache row is BITWISE what the fp32 weights give, from half the weight bytes per step.
 * Otherwise (e.g. a policy trained in fp32) the copy is dropped and the fp32 weights are used. Returns whether
 * the bf16 copy is in use (also kv->bf16_weights); logs the path when it changes.
 * The copy is a snapshot: model_kv_init does NOT make one (the cache starts on fp32 weights), and after the
 * weights change (an optimizer step, a load) the copy is stale until this is called again. generator_run calls
 * it at the start of every run, so generators never see stale weights. One pass over the parameters (only the
 * words that changed are rewritten; it stops at the first non-bf16 word), parallel. */
bool model_kv_refresh_weights(model_kv_cache *kv, const model *m);
void model_kv_reset(model_kv_cache *kv, int slot); /* empties the slot (len = 0) */
/* Copies the first n positions of slot src (n <= its len) into slot dst, which then holds exactly those: the
 * cache rows a prefill of the same n tokens would write, bit for bit, at no model cost (shared prompts).
 * dst == src keeps the slot's first n positions. */
void model_kv_copy_prefix(const model *m, model_kv_cache *kv, int dst, int src, int n);
/* Appends n tokens to the slot (positions len..len+n-1, attending to what the slot already holds) and
 * writes the logits of the last appended position to logits [V] (device memory of m->q, as every logits
 * argument below). Error if len+n > max_len or a token is out
 * of range. */
bool model_prefill(const model *m, model_kv_cache *kv, int slot, const int32_t *tokens, int n, float *logits,
                   s2d_err *err);
/* Prefills n prompts into n distinct slots: prompt i = tokens[start[i] .. start[i+1]) is appended to slots[i]
 * and logits[i, :] ([n, V]) gets the logits of its last position. Prompts share passes over the weights
 * (packed while their tokens fit the cache's scratch), but every row is computed exactly as model_prefill of
 * its prompt alone would (bitwise), so results never depend on the other prompts. Errors (checked before any
 * slot changes) name the prompt: a bad or repeated slot, an empty prompt, too long for its slot, token out of
 * range. */
bool model_prefill_batch(const model *m, model_kv_cache *kv, int n, const int *slots, const int *start,
                         const int32_t *tokens, float *logits, s2d_err *err);
/* One decode step for n active slots: row i appends tokens[i] to slots[i] (slots distinct) and writes
 * logits[i, :] ([n, V]). Error if a slot is full or a token is out of range. */
bool model_decode_step(const model *m, model_kv_cache *kv, int n, const int *slots, const int32_t *tokens,
                       float *logits, s2d_err *err);
